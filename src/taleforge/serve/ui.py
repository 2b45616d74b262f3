"""The co-writing studio's page: a Gradio Blocks app mounted at ``/`` of the server.

One manuscript per story. Write drafts a story from the prompt; Continue (Ctrl/Cmd+Enter)
appends to the manuscript as it is now, edits included; Retry writes the last part again
(alternatives become siblings in the story's tree of drafts, ← → move between them); Undo
goes back to the draft the current one grew from; Pause stops the writing and keeps what was
written. Everything is saved to the writer's library as it happens. The handlers live in
:class:`taleforge.serve.studio.Studio`; this module lays the page out and wires them.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
from starlette.concurrency import run_in_threadpool

from taleforge.config import field_bounds, slider_range
from taleforge.errors import TaleforgeError
from taleforge.generate.lore import Lorebook
from taleforge.genres import GENRES
from taleforge.serve.context import AppContext
from taleforge.serve.library_ui import WriteParts, esc
from taleforge.serve.manuscript import LORE_HELP, counts, next_chapter, render_outline
from taleforge.serve.registry import ModelRegistry
from taleforge.serve.streaming import chunks, generation
from taleforge.serve.studio import (
    LORE_BUDGET,
    MAX_ALTERNATIVES,
    MODES,
    SLIDERS,
    Doc,
    Knobs,
    Studio,
    View,
    new_doc,
)

CSS = """
#story textarea { font-family: Georgia, 'Times New Roman', serif; font-size: 1.05rem;
                  line-height: 1.6; }
#status { min-height: 1.5em; color: var(--body-text-color-subdued); }
#drafts-tree .draft { font-size: 0.9rem; padding: 1px 0; }
#outline-list .chapter { cursor: pointer; padding: 1px 0; }
#outline-list .chapter:hover { text-decoration: underline; }
#outline-list .chapter-words { color: var(--body-text-color-subdued); font-size: 0.85rem; }
#drafts-tree .head { font-weight: bold; }
#drafts-tree .draft-end { color: var(--body-text-color-subdued); }
.ctx-bar { display: inline-block; height: 10px; }
#fresh-text { white-space: pre-wrap; font-family: Georgia, serif; font-size: 0.95rem;
              max-height: 12em; overflow-y: auto; }
#fresh-text .fresh-label { font-family: sans-serif; font-size: 0.8rem;
                           color: var(--body-text-color-subdued); }
#fresh-text .fresh-before { color: var(--body-text-color-subdued); }
#fresh-text mark { background: #fff3b0; color: inherit; }
#fresh-text .tok { cursor: pointer; }
#fresh-text .tok:hover { text-decoration: underline; }
.dark #fresh-text mark { background: #5a4a00; }
.ctx-text { white-space: pre-wrap; font-size: 0.85rem; }
.focus-mode #settings-col, .focus-mode #studio-header, .focus-mode #drafts,
.focus-mode #chapters, .focus-mode #context, .focus-mode #word-alternatives,
.focus-mode #write-extras { display: none !important; }
.focus-mode #story textarea { font-size: 1.2rem; max-width: 46em; margin: auto; }
"""

#: Runs once in the page: Ctrl/Cmd+Enter continues the manuscript from anywhere in it.
JS = """
() => {
  document.addEventListener('keydown', (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === 'Enter') {
      const button = document.querySelector('#continue-btn');
      if (button) { event.preventDefault(); button.click(); }
    }
  });
}
"""

#: In the mark of the last step's new text: a click on a word asks for the model's
#: alternatives there (the word's offset in the manuscript).
_WORD_CLICK_JS = (
    "element.addEventListener('click', (event) => { const word = event.target.closest('.tok'); "
    "if (word) { trigger('click', {offset: Number(word.dataset.at)}); } });"
)

#: In the chapter list: a click puts the manuscript's caret at that chapter, in view.
_CHAPTER_JUMP_JS = (
    "element.addEventListener('click', (event) => { const chapter = "
    "event.target.closest('.chapter'); if (!chapter) return; const text = "
    "document.querySelector('#story textarea'); const at = Number(chapter.dataset.at); "
    "text.focus(); text.setSelectionRange(at, at); text.scrollTop = Math.max(0, "
    "text.scrollHeight * at / Math.max(1, text.value.length) - 40); });"
)
_CARET_AT_END_JS = (
    "() => { const text = document.querySelector('#story textarea'); text.focus(); "
    "text.setSelectionRange(text.value.length, text.value.length); "
    "text.scrollTop = text.scrollHeight; }"
)

#: Browser-side: a fresh document key (New story). Not crypto.randomUUID: that needs HTTPS
#: on any host but localhost.
_NEW_DOC_JS = (
    "() => Array.from({length: 24}, () => Math.floor(Math.random() * 16).toString(16)).join('')"
)


def build_ui(registry: ModelRegistry, ctx: AppContext) -> gr.Blocks:
    """The Blocks app; every handler goes through ``registry`` (admission, lazy loading)."""
    studio = Studio(registry, ctx)
    limits = registry.config.serve
    served = registry.sampling
    model_ids = [m.id for m in registry.offered()]

    def length_slider(label: str, elem_id: str) -> gr.Slider:
        """New tokens per step, up to the server's limit; the server's default first."""
        top = limits.max_new_tokens
        return gr.Slider(
            min(16, top),
            max(top, 2),
            min(served.max_new_tokens, top),
            step=8,
            label=label,
            elem_id=elem_id,
        )

    with gr.Blocks(title="taleforge — co-writing studio") as ui:
        with gr.Row(elem_id="studio-header"):
            gr.Markdown("## taleforge · co-writing studio")
            account_bar = gr.Markdown("", elem_id="account-bar")
        # The open document: its key (made in the page, see studio.py), its library story
        # and the draft shown. Kept in the page so New story clears them at once.
        doc = gr.Textbox(new_doc, visible=False, elem_id="doc")
        story_id = gr.Number(None, precision=0, visible=False, elem_id="story-id")
        head = gr.Number(None, precision=0, visible=False, elem_id="head")
        last = gr.State({})  # what Retry repeats
        reopen = gr.BrowserState(None, storage_key="taleforge-open-story")
        with gr.Tabs() as tabs:
            with gr.Tab("Write", id="write"), gr.Row():
                with gr.Column(scale=3):
                    with gr.Row():
                        title = gr.Textbox(
                            label="Title",
                            placeholder="(the prompt's first line)",
                            max_lines=1,
                            scale=2,
                            elem_id="title",
                        )
                        prompt = gr.Textbox(
                            label="Prompt",
                            placeholder="An idea, a writing prompt, or a first line …",
                            lines=1,
                            max_lines=4,
                            scale=3,
                            elem_id="prompt",
                        )
                    with gr.Row(equal_height=True):
                        write_btn = gr.Button("Write", elem_id="write-btn", min_width=70)
                        continue_btn = gr.Button(
                            "Continue ⌃⏎", variant="primary", elem_id="continue-btn", min_width=90
                        )
                        retry_btn = gr.Button("Retry", elem_id="retry-btn", min_width=60)
                        pause_btn = gr.Button(
                            "Pause", variant="stop", elem_id="pause-btn", min_width=60
                        )
                        undo_btn = gr.Button("Undo", elem_id="undo-btn", min_width=60)
                        prev_btn = gr.Button("←", elem_id="prev-btn", min_width=40)
                        next_btn = gr.Button("→", elem_id="next-btn", min_width=40)
                    status = gr.Markdown("", elem_id="status")
                    story = gr.Textbox(
                        label="Manuscript (yours to edit: Continue writes on from the end)",
                        lines=18,
                        max_lines=40,
                        interactive=True,
                        elem_id="story",
                        buttons=["copy"],
                    )
                    count_line = gr.Markdown(counts(""), elem_id="counts")
                    fresh = gr.HTML("", elem_id="fresh", js_on_load=_WORD_CLICK_JS)
                    with gr.Row(elem_id="word-alternatives"):
                        word_pick = gr.Radio(
                            [],
                            label="The model's alternatives for the word you clicked",
                            scale=4,
                            elem_id="word-pick",
                        )
                        word_btn = gr.Button("Continue from this word", scale=1, elem_id="word-btn")
                    word_at = gr.State(None)  # where the clicked word begins
                    with gr.Row():
                        save_btn = gr.Button("Save", scale=1, elem_id="save-btn")
                        new_btn = gr.Button("New story", scale=1, elem_id="new-btn")
                        focus_btn = gr.Button("Focus", scale=1, elem_id="focus-btn")
                        dark_btn = gr.Button("Dark / light", scale=1, elem_id="dark-btn")
                    save_status = gr.Markdown(
                        "Stories are saved to your Library after every step.",
                        elem_id="save-status",
                    )
                    with gr.Accordion("Chapters", open=False, elem_id="chapters"):
                        outline = gr.HTML(
                            render_outline(""), elem_id="outline", js_on_load=_CHAPTER_JUMP_JS
                        )
                        chapter_btn = gr.Button("New chapter", elem_id="chapter-btn")
                    with gr.Accordion("Drafts (the story's tree)", open=False, elem_id="drafts"):
                        tree = gr.HTML("", elem_id="tree")
                        with gr.Row():
                            drafts = gr.Dropdown([], label="Draft", scale=3, elem_id="draft-pick")
                            draft_btn = gr.Button("Show this draft", scale=1, elem_id="draft-btn")
                    with gr.Accordion(
                        "Context: what the model reads for the next Continue",
                        open=False,
                        elem_id="context",
                    ) as context_box:
                        context_view = gr.HTML("", elem_id="context-box")
                    with gr.Row(elem_id="write-extras"):
                        export_format = gr.Radio(
                            [".txt", ".md"], value=".txt", label="Export as", scale=1
                        )
                        export_btn = gr.Button("Export", scale=1, elem_id="export-btn")
                        export_file = gr.File(label="Story file", scale=2, elem_id="export")
                with gr.Column(scale=2, elem_id="settings-col"):
                    model = gr.Dropdown(
                        model_ids,
                        value=registry.default,
                        label="Model",
                        elem_id="model",
                        allow_custom_value=False,
                    )
                    with gr.Row():
                        mode = gr.Dropdown(list(MODES), value="story", label="Mode", elem_id="mode")
                        genre = gr.Dropdown(["auto", "none", *GENRES], value="auto", label="Genre")
                    preset = gr.Radio(
                        list(studio.presets),
                        value="default",
                        label="Preset: sets the sliders (default = this server's [sampling])",
                        elem_id="preset",
                    )
                    temperature, top_k, top_p, rep = (
                        gr.Slider(
                            low,
                            high,
                            getattr(served, name),
                            step=step,
                            label=label,
                            elem_id=name.replace("_", "-"),
                        )
                        for name, label in SLIDERS.items()
                        for low, high, step in [slider_range(name)]
                    )
                    length = length_slider("Tokens per step", "length")
                    alternatives = gr.Slider(
                        1,
                        MAX_ALTERNATIVES,
                        1,
                        step=1,
                        label="Alternatives per Retry",
                        elem_id="alternatives",
                    )
                    seed = gr.Number(-1, label="Seed (-1 = random)", precision=0)
                    full_length = gr.Checkbox(
                        False,
                        label="Write the whole length (no early ending)",
                        elem_id="full-length",
                    )
                    memory = gr.Textbox(
                        label="Memory (always in context)", lines=3, elem_id="memory"
                    )
                    note = gr.Textbox(
                        label="Author's note (steers the next lines)", lines=2, elem_id="note"
                    )
                    lore = gr.Textbox(
                        label="Lorebook (in context while a key is in the story's last lines)",
                        info=LORE_HELP,
                        lines=4,
                        max_lines=20,
                        placeholder="Mira, the smuggler: Mira is a one-eyed smuggler …",
                        elem_id="lorebook",
                    )
                    lowest, highest = field_bounds(Lorebook, "budget")
                    lore_budget = gr.Slider(
                        int(lowest or 0),
                        int(highest or LORE_BUDGET),
                        LORE_BUDGET,
                        step=16,
                        label="Lorebook budget (tokens)",
                        elem_id="lore-budget",
                    )

            with gr.Tab("Chat", id="chat"):
                gr.Markdown(
                    "Talk with the model about your story (its chat template, no genre). "
                    "Replies can go into the manuscript."
                )
                chatbot = gr.Chatbot(
                    show_label=False,
                    height=420,
                    elem_id="chatbot",
                    render_markdown=False,
                )
                with gr.Row():
                    message = gr.Textbox(
                        placeholder="Write a poem about the sea … then: make it darker",
                        show_label=False,
                        scale=5,
                        elem_id="chat-input",
                    )
                    send_btn = gr.Button("Send", variant="primary", scale=1, elem_id="send-btn")
                    clear_btn = gr.Button("Clear", scale=1)
                with gr.Row():
                    chat_model = gr.Dropdown(
                        model_ids,
                        value=registry.default,
                        label="Chat model",
                        elem_id="chat-model",
                        allow_custom_value=False,
                    )
                    chat_length = length_slider("Reply length (tokens)", "chat-length")
                    insert_btn = gr.Button("Insert last reply into the story", elem_id="insert-btn")
                chat_status = gr.Markdown("", elem_id="chat-status")

            targets = {
                "text": story,
                "counts": count_line,
                "status": status,
                "story_id": story_id,
                "head": head,
                "title": title,
                "saved": save_status,
                "tree": tree,
                "drafts": drafts,
                "last": last,
                "doc": doc,
                "lore": lore,
                "lore_budget": lore_budget,
                "fresh": fresh,
                "outline": outline,
            }
            outputs = [*targets.values(), reopen]

            open_outputs = [*outputs, tabs, prompt, mode, genre]

            async def on_open(story_id_value: Any, request: gr.Request) -> Any:
                if story_id_value in (None, "") or int(story_id_value) <= 0:
                    raise gr.Error("select a story first: click it in the list")
                record, view = await studio.open(int(story_id_value), request)
                mode_value = record.mode if record.mode in MODES else "story"
                return [
                    *show(view),
                    gr.Tabs(selected="write"),
                    record.prompt,
                    mode_value,
                    record.genre or "auto",
                ]

            # the Library tab: opening a story fills the editor
            studio.shelf.build_tab(WriteParts(on_open, open_outputs))

        # -- reading the page into a document --------------------------------------------
        doc_parts = [
            *(doc, story_id, head, title, prompt, story, mode, genre, model, memory, note),
            *(lore, lore_budget),
        ]
        knob_parts = [
            preset,
            temperature,
            top_k,
            top_p,
            rep,
            length,
            seed,
            full_length,
            alternatives,
        ]

        def read(data: dict[Any, Any]) -> tuple[Doc, Knobs]:
            """The document and the knobs from a handler's inputs (given as a set: Gradio
            hands them over as one dict by component)."""
            d = [data.get(part) for part in doc_parts]
            k = [data[part] for part in knob_parts if part in data]
            document = Doc(
                key=str(d[0] or ""),
                story_id=int(d[1]) if d[1] not in (None, "") and int(d[1]) > 0 else None,
                head=int(d[2]) if d[2] not in (None, "") else None,
                title=d[3] or "",
                prompt=d[4] or "",
                text=d[5] or "",
                mode=d[6] or "story",
                genre=d[7] or "auto",
                model=d[8] or registry.default,
                memory=d[9] or "",
                note=d[10] or "",
                lore=d[11] or "",
                lore_budget=int(d[12]) if d[12] not in (None, "") else LORE_BUDGET,
            )
            knobs = Knobs(*k) if len(k) == len(knob_parts) else Knobs()
            return document, knobs

        def show(view: View) -> list[Any]:
            changed = view.changed()
            values = [changed.get(name, gr.skip()) for name in targets]
            sid = changed.get("story_id")
            values.append(sid if sid else gr.skip())  # the story a reload reopens
            return values

        def streamed(action: str) -> Any:
            async def handler(data: dict[Any, Any], request: gr.Request) -> Any:
                document, knobs = read(data)
                previous = data.get(last)
                try:
                    if action == "write":
                        views = studio.write(document, knobs, request)
                    elif action == "continue":
                        views = studio.continue_(document, knobs, request)
                    elif action == "word":
                        at, token = data.get(word_at), data.get(word_pick)
                        if at is None or not token:
                            raise gr.Error("click a word of the new text, then pick an alternative")
                        views = studio.continue_from(document, int(at), token, knobs, request)
                    else:
                        views = studio.retry(document, knobs, previous or {}, request)
                    async for view in views:
                        yield show(view)
                except TaleforgeError as exc:
                    raise gr.Error(str(exc)) from None

            return handler

        def stepped(action: str, amount: int = 0) -> Any:
            async def handler(data: dict[Any, Any], request: gr.Request) -> Any:
                document, _ = read(data)
                if not document.story_id:
                    return show(View(status="nothing saved yet: Write or Continue first"))
                if action == "undo":
                    return show(await studio.undo(document, request))
                if action == "pick":
                    number = data.get(drafts)
                    if number in (None, ""):
                        raise gr.Error("pick a draft first")
                    return show(
                        await studio.checkout(
                            document, int(number), request, f"draft #{int(number)}"
                        )
                    )
                return show(await studio.sibling(document, amount, request))

            return handler

        preset.change(
            lambda name: [getattr(studio.presets[name], key) for key in SLIDERS],
            [preset],
            [temperature, top_k, top_p, rep],
            concurrency_limit=None,
        )
        page: set[Any] = {*doc_parts}
        generate_inputs: set[Any] = {*doc_parts, *knob_parts, last}

        async def on_word(data: dict[Any, Any], event: gr.EventData) -> Any:
            document, knobs = read(data)
            at = int(getattr(event, "offset", -1))
            choices = await studio.alternatives(document, at, knobs)
            word = document.text[at:].split(maxsplit=1)[:1]
            label = f"Instead of “{word[0]}”, the model could write" if word else None
            return gr.Radio(choices=choices, value=None, label=label), at

        fresh.click(on_word, {*doc_parts, *knob_parts}, [word_pick, word_at])
        word_event = word_btn.click(
            streamed("word"),
            {*generate_inputs, word_at, word_pick},
            outputs,
            concurrency_limit=None,
        )
        word_event.then(
            lambda: (gr.Radio(choices=[], value=None), None), None, [word_pick, word_at]
        )
        write_event = write_btn.click(
            streamed("write"), generate_inputs, outputs, api_name="write", concurrency_limit=None
        )
        continue_event = continue_btn.click(
            streamed("continue"),
            generate_inputs,
            outputs,
            api_name="continue",
            concurrency_limit=None,
        )
        retry_event = retry_btn.click(
            streamed("retry"), generate_inputs, outputs, api_name="retry", concurrency_limit=None
        )

        async def on_pause(request: gr.Request) -> Any:
            # a Pause that comes after the end leaves the step's "✓" line as it is
            if not await studio.pause(request):
                gr.Info("nothing is being written")
            return gr.skip()

        # Never queued behind another event; it only asks the generation to stop: the
        # generating handler saves what it wrote and says "paused" itself.
        pause_btn.click(on_pause, None, [status], concurrency_limit=None)
        undo_event = undo_btn.click(stepped("undo"), page, outputs, concurrency_limit=None)
        prev_event = prev_btn.click(stepped("sibling", -1), page, outputs, concurrency_limit=None)
        next_event = next_btn.click(stepped("sibling", 1), page, outputs, concurrency_limit=None)
        draft_event = draft_btn.click(
            stepped("pick"), {*page, drafts}, outputs, concurrency_limit=None
        )
        # -- the context viewer: recomputed while it is open, as the writer types -------
        context_open = gr.State(False)

        async def on_context(data: dict[Any, Any]) -> Any:
            if not data.get(context_open):
                return gr.skip()
            document, knobs = read(data)
            return await studio.context(document, knobs)

        async def on_typed(data: dict[Any, Any]) -> Any:
            """The manuscript changed by hand: the counter follows, the mark of the last
            step's new text ends, the context viewer follows. (One handler: a textbox with
            two input listeners left the first one pending in the page.)"""
            text = data.get(story) or ""
            line = await run_in_threadpool(counts, text, registry.tokenizer(data.get(model)))
            return line, "", await on_context(data), render_outline(text)

        context_inputs: set[Any] = {*doc_parts, *knob_parts, context_open}
        context_box.expand(lambda: True, None, [context_open]).then(
            on_context, context_inputs, [context_view]
        )
        context_box.collapse(lambda: False, None, [context_open])
        story.input(
            on_typed,
            context_inputs,
            [count_line, fresh, context_view, outline],
            trigger_mode="always_last",
            show_progress="hidden",
        )
        for typed in (memory, note, lore):
            typed.input(
                on_context,
                context_inputs,
                [context_view],
                trigger_mode="always_last",
                show_progress="hidden",
            )
        for moved in (lore_budget, length, model, mode):
            moved.change(on_context, context_inputs, [context_view], show_progress="hidden")
        for event in (
            word_event,
            write_event,
            continue_event,
            retry_event,
            undo_event,
            prev_event,
            next_event,
            draft_event,
        ):
            event.then(on_context, context_inputs, [context_view], show_progress="hidden")

        async def on_save(kind: str, data: dict[Any, Any], request: gr.Request) -> Any:
            document, _ = read(data)
            record = await studio.save(document, document.text, kind, request)
            if record is None:
                return show(View())
            how = "saved" if kind == "save" else "autosaved"
            return show(await studio.saved_view(record, request, how))

        async def save_now(data: dict[Any, Any], request: gr.Request) -> Any:
            return await on_save("save", data, request)

        async def save_edit(data: dict[Any, Any], request: gr.Request) -> Any:
            return await on_save("edit", data, request)

        save_btn.click(save_now, page, outputs)
        story.blur(save_edit, page, outputs)
        # the lorebook is the story's (stored with it, not a draft of the text)
        lore.blur(save_edit, page, outputs)
        lore_budget.release(save_edit, page, outputs)
        # Cleared in the browser at once: a prompt typed right after the click is never
        # undone by a late answer from the server; a new document key means the next save
        # makes a new story.
        new_btn.click(
            None,
            None,
            [doc, story_id, head, title, story, prompt, save_status, tree, last, lore, fresh],
            js=f"() => [({_NEW_DOC_JS})(), null, null, '', '', '', "
            "'New story: write a prompt, or type its first lines.', '', {}, '', '']",
        ).then(lambda: (counts(""), None, render_outline("")), None, [count_line, reopen, outline])

        def on_chapter(data: dict[Any, Any]) -> Any:
            document, _ = read(data)
            text = next_chapter(document.text)
            return show(studio.text_view(text, document.model, fresh=""))

        # the heading goes in; the writer types on (or Continues) below it
        chapter_btn.click(on_chapter, page, outputs).then(None, js=_CARET_AT_END_JS)
        focus_btn.click(None, js="() => { document.body.classList.toggle('focus-mode') }")
        dark_btn.click(None, js="() => { document.body.classList.toggle('dark') }")

        def on_export(data: dict[Any, Any]) -> str:
            document, _ = read(data)
            return studio.export(document, data[export_format])

        export_btn.click(on_export, {*page, export_format}, [export_file])

        # -- chat ----------------------------------------------------------------------
        async def on_send(
            text: str, chat: list[dict[str, Any]], model_id: str, tokens: int, request: gr.Request
        ) -> Any:
            if not text.strip():
                raise gr.Error("type a message first")
            history = [{"role": m["role"], "content": _plain(m["content"])} for m in chat]
            text, cleaned = studio.admit(text, {"history": history}, request)
            history = cleaned["history"]
            chat = [*chat, _message("user", text), _message("assistant", "")]
            yield chat, "", f"⏳ {model_id} is thinking …"
            reply = ""
            try:
                async with generation(
                    registry,
                    model_id,
                    text,
                    mode="chat",
                    genre="none",
                    history=history,
                    max_new_tokens=min(int(tokens), limits.max_new_tokens),
                ) as (spec, stream):
                    async for chunk in chunks(stream):
                        reply += chunk.text
                        chat[-1] = _message("assistant", reply)
                        yield chat, "", f"✍️ {spec} is writing …"
                    stories = stream.stories
            except TaleforgeError as exc:
                raise gr.Error(str(exc)) from None
            if stories:
                done = stories[0]
                chat[-1] = _message("assistant", done.generated_text)
                yield chat, "", f"✓ {done.generated_tokens} tokens · {done.finish_reason} · {spec}"

        chat_io = ([message, chatbot, chat_model, chat_length], [chatbot, message, chat_status])
        send_event = send_btn.click(on_send, *chat_io, concurrency_limit=None)
        message.submit(on_send, *chat_io, concurrency_limit=None)
        clear_btn.click(lambda: [], None, [chatbot], cancels=[send_event])

        async def on_insert(data: dict[Any, Any], request: gr.Request) -> Any:
            chat = data[chatbot]
            replies = [_plain(m["content"]) for m in chat if m["role"] == "assistant"]
            if not replies or not replies[-1].strip():
                raise gr.Error("there is no reply to insert yet: Send a message first")
            document, _ = read(data)
            joiner = "\n\n" if document.text.strip() else ""
            text = document.text.rstrip() + joiner + replies[-1].strip()
            document = Doc(**{**document.__dict__, "text": text})
            record = await studio.save(document, text, "edit", request)
            view = studio.text_view(text, document.model, status="📥 the reply is in the story")
            if record is not None:
                saved = await studio.saved_view(record, request)
                view = View(**{**view.__dict__, **saved.changed()})
            return [*show(view), gr.Tabs(selected="write")]

        insert_btn.click(on_insert, {chatbot, *page}, [*outputs, tabs])

        async def on_load(remembered: Any, request: gr.Request) -> Any:
            account = studio.account(request)
            who = (
                "local writer · [account & API tokens](/account)"
                if account.is_local
                else f"signed in as **{esc(account.username)}** · "
                "[account, API tokens, log out](/account)"
            )
            if remembered in (None, "") or not str(remembered).isdigit():
                return [who, *[gr.skip()] * len(open_outputs)]
            try:
                opened = await on_open(int(remembered), request)
            except gr.Error:  # deleted meanwhile, or another writer's browser
                return [who, *[gr.skip()] * len(open_outputs)]
            opened[len(outputs)] = gr.skip()  # stay on the tab the page opened with
            return [who, *opened]

        ui.load(on_load, [reopen], [account_bar, *open_outputs])
    return ui


def _message(role: str, text: str) -> dict[str, str]:
    """A chat message as the chatbot shows it: the text exactly as typed or written (the
    chatbot renders HTML even without Markdown, so markup is escaped: "<b>" stays "<b>")."""
    return {"role": role, "content": html.escape(text, quote=False)}


def _plain(content: Any) -> str:
    """A chatbot message's text as typed or written (see :func:`_message`); Gradio may hand
    back a list of parts."""
    if isinstance(content, list):
        content = "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return html.unescape(str(content))
