"""The co-writing studio: a Gradio Blocks app mounted at ``/`` of the server.

Write streams a story in; Pause stops it and leaves the text editable; Resume continues
from the text as it is now (edits included); Retry replaces the last generated part; Undo
restores earlier versions. Memory and the author's note stay in the model's context however
long the story grows. The Chat tab talks with the model's chat template.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from taleforge.config import sampling_preset, slider_range
from taleforge.errors import TaleforgeError
from taleforge.genres import GENRES
from taleforge.serve.context import AppContext
from taleforge.serve.exports import ExportFolder
from taleforge.serve.library_ui import StudioLibrary, WriteParts, esc
from taleforge.serve.limits import request_identity
from taleforge.serve.registry import ModelRegistry
from taleforge.serve.sanitize import clean_request, clean_text
from taleforge.serve.streaming import chunks, generation

#: The presets the studio offers beside the server's own ``[sampling]`` ("default"): their
#: ``[sampling]`` tables in ``configs/``, the same files ``--config NAME`` reads.
PRESET_NAMES = ("creative", "focused")
#: The sampling parameters the studio has a slider for, in the order of ``settings``.
SLIDERS = {
    "temperature": "Temperature",
    "top_k": "Top-k (0 = off)",
    "top_p": "Top-p",
    "repetition_penalty": "Repetition penalty",
}
#: Set per step by the studio itself (length, seed, the whole-length switch), never by a preset.
_PER_STEP = ("max_new_tokens", "min_new_tokens", "seed", "stop", "num_stories")
MODES = ["story", "writing-prompt", "continue", "poem", "dialogue"]
MAX_VERSIONS = 50
CSS = """
#story textarea { font-family: Georgia, 'Times New Roman', serif; font-size: 1.05rem;
                  line-height: 1.6; }
#status { min-height: 1.5em; color: var(--body-text-color-subdued); }
"""


def _counts(text: str, tokenizer: Any = None) -> str:
    words = len(re.findall(r"\S+", text))
    counts = f"{words:,} words · {len(text):,} characters"
    if tokenizer is not None:
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        counts += f" · {tokens:,} tokens"
    return counts


def _push(versions: list[str], text: str) -> list[str]:
    if text and (not versions or versions[-1] != text):
        versions = [*versions, text][-MAX_VERSIONS:]
    return versions


@dataclass
class _Run:
    """One generation a studio handler is streaming."""

    task: asyncio.Task[Any] | None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    paused: bool = False
    stream: Any = None


class StudioRuns:
    """The generation each writer's studio is streaming, so Pause can stop it and wait.

    Gradio's ``cancels=`` and a fast stream race: the handler could send one more update
    after Pause's status and overwrite it (seen with llama.cpp and cache replays, which
    stream hundreds of tokens a second). Pause therefore stops the stream here and answers
    only once the handler has sent its last update.
    """

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}

    def start(self, session: str) -> _Run:
        run = _Run(asyncio.current_task())
        self._runs[session] = run
        return run

    def end(self, session: str, run: _Run) -> None:
        run.ended.set()
        if self._runs.get(session) is run:
            del self._runs[session]

    async def pause(self, session: str, within: float = 10.0) -> None:
        """Stop the session's generation; return once its handler sends nothing more."""
        run = self._runs.get(session)
        if run is None:
            return
        run.paused = True
        if run.stream is not None:
            run.stream.cancel()
        ended = asyncio.ensure_future(run.ended.wait())
        # the handler's task ending (Gradio cancelled it) also means no more updates
        waiting: set[asyncio.Future[Any]] = {ended}
        if run.task is not None and not run.task.done():
            waiting.add(run.task)
        try:
            await asyncio.wait(waiting, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()


def _session(request: gr.Request | None) -> str:
    return str(getattr(request, "session_hash", None) or "")


def build_ui(registry: ModelRegistry, ctx: AppContext | None = None) -> gr.Blocks:
    """The Blocks app; every handler goes through ``registry`` (admission, lazy loading)."""
    limits = registry.config.serve
    model_ids = [m.id for m in registry.offered()]
    exports = ctx.exports if ctx is not None else ExportFolder.create(limits.export_max_age_seconds)

    served = registry.sampling
    presets = {"default": served, **{name: sampling_preset(name) for name in PRESET_NAMES}}

    def sampling(
        preset: str,
        temperature: float,
        top_k: int,
        top_p: float,
        rep: float,
        length: int,
        seed: Any,
        full_length: bool = False,
    ) -> dict[str, Any]:
        """The step's options: the preset's parameters (also those without a slider, such
        as creative's min-p), the sliders over them, the step's length and seed."""
        base = presets.get(preset, served)
        options: dict[str, Any] = base.model_dump(exclude=set(_PER_STEP))
        options.update(
            temperature=float(temperature),
            top_k=int(top_k),
            top_p=float(top_p),
            repetition_penalty=float(rep),
            max_new_tokens=min(int(length), limits.max_new_tokens),
        )
        if seed not in (None, "", -1) and int(seed) >= 0:
            options["seed"] = int(seed)
        if full_length:  # the model may not end the story before the step's length
            options["min_new_tokens"] = options["max_new_tokens"]
        return options

    def at_least_a_line(options: dict[str, Any]) -> dict[str, Any]:
        """Write and Resume always add something (up to 16 tokens), even where the model
        would end the story at once (the story model sometimes does: an empty story)."""
        floor = min(16, options["max_new_tokens"])
        return {**options, "min_new_tokens": max(options.get("min_new_tokens", 0), floor)}

    def admit(
        prompt: str, options: dict[str, Any], request: gr.Request | None
    ) -> tuple[str, dict[str, Any]]:
        """Clean and check the texts, count the generation against the writer's rate limit."""
        try:
            prompt, options = clean_request(prompt, options, limits.max_prompt_chars)
            if ctx is not None and ctx.limiter is not None:
                ctx.limiter.hit("generate", *request_identity(request))
        except TaleforgeError as exc:
            raise gr.Error(str(exc)) from None
        return prompt, options

    runs = StudioRuns()

    async def run(
        base: str,
        prompt: str,
        model: str,
        options: dict[str, Any],
        versions: list[str],
        request: gr.Request | None = None,
    ) -> Any:
        """Stream one generation; yields (story, counts, status, versions)."""
        prompt, options = admit(prompt, options, request)
        base = clean_text(base)
        session = _session(request)
        current = runs.start(session)
        try:
            started = time.perf_counter()
            yield base, _counts(base), f"⏳ writing with {model} …", versions
            written = ""
            try:
                async with generation(registry, model, prompt, **options) as (spec, stream):
                    current.stream = stream
                    if current.paused:
                        stream.cancel()
                    async for chunk in chunks(stream):
                        if current.paused:
                            return  # Pause answers once this handler has stopped
                        written += chunk.text
                        text = base + written if base else written.lstrip()
                        yield text, _counts(text), f"✍️ writing with {spec} …", versions
                    stories = stream.stories
            except TaleforgeError as exc:
                raise gr.Error(str(exc)) from None
            if not stories or current.paused:
                return
            story = stories[0]
            final = story.text  # for continue: the given text and the new, joined cleanly
            tokenizer = registry.tokenizer(spec)
            seconds = time.perf_counter() - started
            status = (
                f"✓ {story.generated_tokens} tokens in {seconds:.1f} s · seed {story.seed} · "
                f"{story.finish_reason} · {spec}"
            )
            yield final, _counts(final, tokenizer), status, versions
        finally:
            runs.end(session, current)

    shelf = StudioLibrary(ctx) if ctx is not None else None
    with gr.Blocks(title="taleforge — co-writing studio") as ui:
        with gr.Row():
            gr.Markdown("## taleforge · co-writing studio")
            account_bar = gr.Markdown("", elem_id="account-bar")
        versions = gr.State([])
        last = gr.State({})  # what Retry repeats: {"base", "prompt", "options"}
        # The library story the Write tab is editing. Kept in the page (not a server-side
        # State) so New story can clear it in the browser at once; the library checks that
        # the id belongs to the writer.
        story_id = gr.Number(None, precision=0, visible=False, elem_id="story-id")
        with gr.Tabs() as tabs:
            with gr.Tab("Write", id="write"), gr.Row():
                with gr.Column(scale=3):
                    prompt = gr.Textbox(
                        label="Prompt",
                        placeholder="An idea, a writing prompt, or a first line …",
                        lines=2,
                        elem_id="prompt",
                    )
                    title = gr.Textbox(
                        label="Title",
                        placeholder="(the prompt's first line)",
                        max_lines=1,
                        elem_id="title",
                    )
                    story = gr.Textbox(
                        label="Story (editable: pause, change anything, resume)",
                        lines=16,
                        max_lines=40,
                        interactive=True,
                        elem_id="story",
                        buttons=["copy"],
                    )
                    counts = gr.Markdown(_counts(""), elem_id="counts")
                    with gr.Row():
                        write_btn = gr.Button("Write", variant="primary", elem_id="write-btn")
                        pause_btn = gr.Button("Pause", variant="stop", elem_id="pause-btn")
                        resume_btn = gr.Button("Resume", elem_id="resume-btn")
                        retry_btn = gr.Button("Retry", elem_id="retry-btn")
                        undo_btn = gr.Button("Undo", elem_id="undo-btn")
                    status = gr.Markdown("", elem_id="status")
                    with gr.Row():
                        export_format = gr.Radio(
                            [".txt", ".md"], value=".txt", label="Export as", scale=1
                        )
                        export_btn = gr.Button("Export", scale=1, elem_id="export-btn")
                        export_file = gr.File(label="Story file", scale=2, elem_id="export")
                    with gr.Row():
                        save_btn = gr.Button("Save", scale=1, elem_id="save-btn")
                        new_btn = gr.Button("New story", scale=1, elem_id="new-btn")
                        save_status = gr.Markdown(
                            "Stories are saved to your Library after every step.",
                            elem_id="save-status",
                        )
                with gr.Column(scale=2):
                    model = gr.Dropdown(
                        model_ids,
                        value=registry.default,
                        label="Model",
                        elem_id="model",
                        allow_custom_value=False,
                    )
                    with gr.Row():
                        mode = gr.Dropdown(MODES, value="story", label="Mode", elem_id="mode")
                        genre = gr.Dropdown(["auto", "none", *GENRES], value="auto", label="Genre")
                    preset = gr.Radio(
                        list(presets),
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
                    length = gr.Slider(
                        min(16, limits.max_new_tokens),
                        max(limits.max_new_tokens, 2),
                        min(served.max_new_tokens, limits.max_new_tokens),
                        step=8,
                        label="Tokens per step",
                        elem_id="length",
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

            with gr.Tab("Chat", id="chat"):
                chatbot = gr.Chatbot(label="Creative-writing chat", height=420, elem_id="chatbot")
                with gr.Row():
                    message = gr.Textbox(
                        placeholder="Write a poem about the sea … then: make it darker",
                        show_label=False,
                        scale=5,
                        elem_id="chat-input",
                    )
                    send_btn = gr.Button("Send", variant="primary", scale=1, elem_id="send-btn")
                    clear_btn = gr.Button("Clear", scale=1)
                chat_status = gr.Markdown(
                    "Replies use the model, the genre-free chat template and the length of "
                    "the Write tab.",
                    elem_id="chat-status",
                )

            if shelf is not None:
                shelf.build_tab(
                    WriteParts(
                        tabs, story, prompt, title, story_id, mode, genre, model, save_status
                    )
                )

        settings = [preset, temperature, top_k, top_p, rep, length, seed, full_length]
        preset.change(
            lambda name: [getattr(presets[name], key) for key in SLIDERS],
            [preset],
            [temperature, top_k, top_p, rep],
            concurrency_limit=None,
        )
        outputs = [story, counts, status, versions]

        async def start(
            base: str,
            prompt_text: str,
            model_id: str,
            options: dict[str, Any],
            history: list[str],
            story_text: str,
            request: gr.Request | None = None,
        ) -> Any:
            """Keep the current text for Undo, remember the request for Retry, then stream."""
            history = _push(history, story_text)
            previous = {"base": base, "prompt": prompt_text, "options": options, "model": model_id}
            yield gr.skip(), gr.skip(), gr.skip(), history, previous
            async for update in run(base, prompt_text, model_id, options, history, request):
                yield (*update, gr.skip())

        async def on_write(
            prompt_text: str,
            story_text: str,
            model_id: str,
            mode_name: str,
            genre_name: str,
            memory_text: str,
            note_text: str,
            history: list[str],
            request: gr.Request,
            *knobs: Any,
        ) -> Any:
            if not prompt_text.strip():
                raise gr.Error("write a prompt first: an idea, a writing prompt or a first line")
            options = {
                **at_least_a_line(sampling(*knobs)),
                "mode": mode_name,
                "genre": genre_name,
                "memory": memory_text,
                "authors_note": note_text,
            }
            async for update in start(
                "", prompt_text, model_id, options, history, story_text, request
            ):
                yield update

        async def on_resume(
            story_text: str,
            model_id: str,
            genre_name: str,
            memory_text: str,
            note_text: str,
            history: list[str],
            request: gr.Request,
            *knobs: Any,
        ) -> Any:
            if not story_text.strip():
                raise gr.Error("there is no story to continue: write one first, or type its start")
            options = {
                **at_least_a_line(sampling(*knobs)),
                "mode": "continue",
                "genre": genre_name,
                "memory": memory_text,
                "authors_note": note_text,
            }
            async for update in start(
                story_text, story_text, model_id, options, history, story_text, request
            ):
                yield update

        async def on_retry(
            story_text: str, history: list[str], previous: dict[str, Any], request: gr.Request
        ) -> Any:
            if not previous:
                raise gr.Error("nothing to retry yet: Write or Resume first")
            options = {k: v for k, v in previous["options"].items() if k != "seed"}
            history = _push(history, story_text)
            async for update in run(
                previous["base"], previous["prompt"], previous["model"], options, history, request
            ):
                yield update

        def on_undo(
            history: list[str], story_text: str, model_id: str
        ) -> tuple[str, str, str, list[str]]:
            tokenizer = registry.tokenizer(model_id)
            if not history:
                return story_text, _counts(story_text, tokenizer), "nothing to undo", history
            *rest, text = history
            status = f"restored an earlier version ({len(rest)} more)"
            return text, _counts(text, tokenizer), status, rest

        def on_export(story_text: str, fmt: str, prompt_text: str) -> str:
            if not story_text.strip():
                raise gr.Error("the story is empty: nothing to export")
            title = (prompt_text.strip().splitlines() or ["story"])[0][:60] or "story"
            slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower() or "story"
            body = f"# {title}\n\n{story_text}\n" if fmt == ".md" else story_text + "\n"
            return str(exports.write(f"{slug}{fmt}", body.encode("utf-8")))

        # Write starts a new library story: the open one is let go *before* the writing
        # starts, so the write's autosave can never land in the previous story (as a separate
        # reset event could, when the queue ran it late under load: one story lost).
        write_event = write_btn.click(
            lambda: (None, ""), None, [story_id, title], concurrency_limit=None
        ).then(
            on_write,
            [prompt, story, model, mode, genre, memory, note, versions, *settings],
            [*outputs, last],
            concurrency_limit=None,
        )
        resume_event = resume_btn.click(
            on_resume,
            [story, model, genre, memory, note, versions, *settings],
            [*outputs, last],
            concurrency_limit=None,
        )
        retry_event = retry_btn.click(
            on_retry, [story, versions, last], outputs, concurrency_limit=None
        )
        generating: Any = [write_event, resume_event, retry_event]  # Dependency objects

        async def on_pause(request: gr.Request) -> str:
            await runs.pause(_session(request))
            return "⏸ paused: edit the story, then Resume"

        # Never queued behind another event: Pause answers as soon as the stream has stopped.
        pause_event = pause_btn.click(
            on_pause, None, [status], cancels=generating, concurrency_limit=None
        )
        # One generation at a time per writer: starting another stops the one running.
        write_btn.click(None, cancels=[resume_event, retry_event])
        resume_btn.click(None, cancels=[write_event, retry_event])
        retry_btn.click(None, cancels=[write_event, resume_event])
        undo_btn.click(on_undo, [versions, story, model], outputs, cancels=generating)
        story.input(
            lambda text, model_id: _counts(text, registry.tokenizer(model_id)),
            [story, model],
            [counts],
        )
        export_btn.click(on_export, [story, export_format, prompt], [export_file])

        async def on_send(
            text: str, chat: list[dict[str, Any]], model_id: str, tokens: int, request: gr.Request
        ) -> Any:
            if not text.strip():
                raise gr.Error("type a message first")
            history = [{"role": m["role"], "content": _plain(m["content"])} for m in chat]
            text, cleaned = admit(text, {"history": history}, request)
            history = cleaned["history"]
            chat = [*chat, {"role": "user", "content": text}, {"role": "assistant", "content": ""}]
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
                        chat[-1] = {"role": "assistant", "content": reply}
                        yield chat, "", f"✍️ {spec} is writing …"
                    stories = stream.stories
            except TaleforgeError as exc:
                raise gr.Error(str(exc)) from None
            if stories:
                done = stories[0]
                chat[-1] = {"role": "assistant", "content": done.generated_text}
                yield chat, "", f"✓ {done.generated_tokens} tokens · {done.finish_reason} · {spec}"

        chat_io = ([message, chatbot, model, length], [chatbot, message, chat_status])
        send_event = send_btn.click(on_send, *chat_io, concurrency_limit=None)
        message.submit(on_send, *chat_io, concurrency_limit=None)
        clear_btn.click(lambda: [], None, [chatbot], cancels=[send_event])

        if shelf is not None:
            _wire_saving(
                shelf,
                ui,
                account_bar,
                events=(write_event, resume_event, retry_event, pause_event),
                inputs=[story_id, title, story, prompt, mode, genre, model],
                outputs=[story_id, title, save_status],
                buttons=(write_btn, save_btn, new_btn),
                story=story,
            )
    return ui


def _wire_saving(
    shelf: StudioLibrary,
    ui: gr.Blocks,
    account_bar: gr.Markdown,
    *,
    events: tuple[Any, ...],
    inputs: list[Any],
    outputs: list[Any],
    buttons: tuple[gr.Button, gr.Button, gr.Button],
    story: gr.Textbox,
) -> None:
    """Autosave after every generation step, on Pause and when the text loses focus after an
    edit; Save saves now; Write and New story start a new library story."""
    story_id, title = outputs[0], outputs[1]
    _, save_btn, new_btn = buttons  # Write lets the open story go in its own event chain

    def saver(kind: str) -> Any:
        async def save(
            sid: Any,
            name: str,
            text: str,
            idea: str,
            mode: str,
            genre: str,
            model: str,
            request: gr.Request,
        ) -> Any:
            return await shelf.save(sid, name, text, idea, mode, genre, model, kind, request)

        return save

    *generating, pause_event = events
    for event in generating:
        event.then(saver("generate"), inputs, outputs)
    pause_event.then(saver("autosave"), inputs, outputs)
    story.blur(saver("edit"), inputs, outputs)
    save_btn.click(saver("save"), inputs, outputs)
    # Cleared in the browser at once: a prompt typed (or a Save clicked) right after the click
    # is never undone by a late answer from the server.
    new_btn.click(
        None,
        None,
        [story_id, title, story, inputs[3], outputs[2]],
        js="() => [null, '', '', '', 'New story: write a prompt, or type its first lines.']",
    )

    def who(request: gr.Request) -> str:
        account = shelf.account(request)
        if account.is_local:
            return "local writer · [account & API tokens](/account)"
        return (
            f"signed in as **{esc(account.username)}** · [account, API tokens, log out](/account)"
        )

    ui.load(who, None, [account_bar])


def _plain(content: Any) -> str:
    """Chatbot message content as text (Gradio may hand back a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)
