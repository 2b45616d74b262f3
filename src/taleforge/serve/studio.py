"""The manuscript studio's actions, without the page: each writes one document, in the library.

A story is one library entry, made once (by the first Write or Continue of a new document)
and versioned by every later action: Write adds a fresh draft from the prompt (a new root of
the story's tree), Continue appends to the manuscript (a child of the draft it continued),
Retry writes the last part again (a sibling of the part it replaces), a clicked word's
alternative starts a branch beside the draft it changes, Undo and ←/→ move in the tree
without writing anything. :class:`Studio` holds these handlers; ``ui.build_ui`` lays out
the page and wires them, and the tests call them without a browser. What the page shows
(the marks, trees, chapters, the lorebook box, the context viewer) is made in
``manuscript.py``.

A page names its document with a random key (``doc``): the first save of a document makes
its story and every later save of that key finds it, whichever of two racing saves (a
Pause's and a Write's, an edit's and a Continue's) arrives first. Saves of one document are
serialised.
"""

from __future__ import annotations

import asyncio
import html
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

import gradio as gr
from starlette.concurrency import run_in_threadpool

from taleforge.config import sampling_preset
from taleforge.errors import TaleforgeError
from taleforge.generate.lore import Lorebook
from taleforge.genres import GENRES
from taleforge.serve.context import AppContext
from taleforge.serve.library_ui import StudioLibrary, esc
from taleforge.serve.limits import request_identity
from taleforge.serve.manuscript import (
    counts,
    draft_choices,
    format_lorebook,
    parse_lorebook,
    render_context,
    render_fresh,
    render_outline,
    render_tree,
)
from taleforge.serve.registry import ModelRegistry
from taleforge.serve.sanitize import check_length, clean_request, clean_text
from taleforge.serve.streaming import chunks, generation
from taleforge.store import Account, StoryNotFound, StoryRecord
from taleforge.store.library import HEAD

#: The presets the studio offers beside the server's own ``[sampling]`` ("default"): their
#: ``[sampling]`` tables in ``configs/``, the same files ``--config NAME`` reads.
PRESET_NAMES = ("creative", "focused")
#: The sampling parameters the studio has a slider for, in the order of the page's knobs.
SLIDERS = {
    "temperature": "Temperature",
    "top_k": "Top-k (0 = off)",
    "top_p": "Top-p",
    "repetition_penalty": "Repetition penalty",
}
#: Set per step by the studio itself (length, seed, the whole-length switch), never by a preset.
_PER_STEP = ("max_new_tokens", "min_new_tokens", "seed", "stop", "num_stories")
MODES = ("story", "writing-prompt", "continue", "poem", "dialogue")
#: Alternatives one Retry may write at once.
MAX_ALTERNATIVES = 4
#: The model's next tokens shown for a clicked word.
ALTERNATIVE_TOKENS = 8
#: Documents whose story id a server remembers (the oldest are forgotten first).
_DOCUMENTS = 10_000
#: Never set: a field of a :class:`View` left as it is on the page.
KEEP: Any = object()
#: A new story's lorebook budget (tokens): the library's own default.
LORE_BUDGET = int(Lorebook.model_fields["budget"].default)


def new_doc() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True)
class Doc:
    """The open document as the page holds it."""

    key: str = ""
    story_id: int | None = None
    head: int | None = None
    title: str = ""
    prompt: str = ""
    text: str = ""
    mode: str = "story"
    genre: str = "auto"
    model: str = ""
    memory: str = ""
    note: str = ""
    #: The lorebook box's lines (see :func:`parse_lorebook`) and its token budget.
    lore: str = ""
    lore_budget: int = LORE_BUDGET


@dataclass(frozen=True)
class Knobs:
    """The Write tab's sampling controls."""

    preset: str = "default"
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    length: int = 200
    seed: Any = -1
    full_length: bool = False
    alternatives: int = 1


@dataclass(frozen=True)
class View:
    """What an action changes on the page; fields left at :data:`KEEP` stay as they are."""

    text: Any = KEEP
    counts: Any = KEEP
    status: Any = KEEP
    story_id: Any = KEEP
    head: Any = KEEP
    title: Any = KEEP
    saved: Any = KEEP
    tree: Any = KEEP
    drafts: Any = KEEP
    last: Any = KEEP
    doc: Any = KEEP
    lore: Any = KEEP
    lore_budget: Any = KEEP
    fresh: Any = KEEP
    outline: Any = KEEP

    def changed(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not KEEP
        }


@dataclass
class _Run:
    """One generation a studio handler is streaming."""

    task: asyncio.Task[Any] | None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    paused: bool = False
    stream: Any = None


class StudioRuns:
    """The generation each writer's studio is streaming, so Pause can stop it and wait.

    Pause only asks: the generating handler stops at the next token, saves what was written
    and sends the last update itself (a Gradio ``cancels=`` would kill it before it saved).
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

    async def pause(self, session: str, within: float = 30.0) -> bool:
        """Stop the session's generation; True once its handler has sent its last update."""
        run = self._runs.get(session)
        if run is None:
            return False
        run.paused = True
        if run.stream is not None:
            run.stream.cancel()
        try:
            await asyncio.wait_for(run.ended.wait(), within)
        except TimeoutError:
            return False
        return True


def session_of(request: gr.Request | None) -> str:
    return str(getattr(request, "session_hash", None) or "")


def _write_mode(doc: Doc) -> str:
    """The mode a Write drafts in: the document's, where it writes from a prompt."""
    return doc.mode if doc.mode in MODES and doc.mode != "continue" else "story"


def _tail(text: str, chars: int) -> tuple[str, str]:
    """(head, tail): the tail is at most ``chars`` characters and starts at a word."""
    if len(text) <= chars:
        return "", text
    cut = len(text) - chars
    space = text.find(" ", cut)
    if 0 <= space < cut + 200:
        cut = space + 1
    return text[:cut], text[cut:]


class Studio:
    """The studio's handlers for one server: generation, the document's library story, the
    tree of drafts."""

    def __init__(self, registry: ModelRegistry, ctx: AppContext) -> None:
        self.registry, self.ctx = registry, ctx
        self.limits = registry.config.serve
        served = registry.sampling
        self.presets = {"default": served, **{n: sampling_preset(n) for n in PRESET_NAMES}}
        self.runs = StudioRuns()
        self._stories: OrderedDict[str, int] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.shelf = StudioLibrary(ctx)

    # -- accounts and the library ------------------------------------------------------------

    def account(self, request: gr.Request | None) -> Account:
        return self.shelf.account(request)

    def remember(self, key: str, story_id: int) -> None:
        """The document ``key`` is library story ``story_id`` (an opened story, a new one)."""
        if key:
            self._stories[key] = story_id
            self._stories.move_to_end(key)
            while len(self._stories) > _DOCUMENTS:
                self._stories.popitem(last=False)

    def check_manuscript(self, text: str) -> str:
        text = clean_text(text or "")
        try:
            check_length(text, self.limits.max_story_chars, "manuscript", "max_story_chars")
        except TaleforgeError as exc:
            raise gr.Error(str(exc)) from None
        return text

    async def save(
        self,
        doc: Doc,
        text: str,
        kind: str,
        request: gr.Request | None,
        *,
        parent: Any = HEAD,
    ) -> StoryRecord | None:
        """Save ``text`` as a new version of the document's story (made on its first save).

        ``parent``: the version it grows from; by default the story's head (what the writer
        is looking at); None makes it a new root (a fresh draft from a prompt).
        """
        text = self.check_manuscript(text)
        if not text.strip():  # what is left once control characters are gone
            if kind == "save":
                raise gr.Error("the story is empty: write something before saving")
            return None
        title = clean_text(doc.title or "").strip()
        if len(title) > 200:
            raise gr.Error(f"the title is {len(title)} characters: use at most 200")
        prompt = clean_text(doc.prompt or "")[: self.limits.max_prompt_chars]
        account = await run_in_threadpool(self.account, request)
        library = self.ctx.library
        fields_: dict[str, Any] = {
            "prompt": prompt,
            "mode": doc.mode if doc.mode in MODES else "story",
            "genre": doc.genre if doc.genre in GENRES else None,
            "model": doc.model or None,
        }
        lock = self._locks.setdefault(doc.key or f"story-{doc.story_id}", asyncio.Lock())
        async with lock:
            story_id = doc.story_id or self._stories.get(doc.key)
            record: StoryRecord | None = None
            try:
                if story_id:
                    try:
                        record = await run_in_threadpool(
                            lambda: library.update(
                                account,
                                int(story_id),
                                text=text,
                                title=title or None,
                                kind=kind,
                                parent=parent,
                                **fields_,
                            )
                        )
                    except StoryNotFound:  # deleted meanwhile: it is saved as a new story
                        record = None
                if record is None:
                    record = await run_in_threadpool(
                        lambda: library.create(
                            account, text=text, title=title or None, kind=kind, **fields_
                        )
                    )
                record = await self._keep_lorebook(account, record, doc)
            except TaleforgeError as exc:
                raise gr.Error(str(exc)) from None
            self.remember(doc.key, record.id)
            return record

    async def _keep_lorebook(self, account: Account, record: StoryRecord, doc: Doc) -> StoryRecord:
        """The story keeps the lorebook box as it is (a box with a bad line keeps the last
        good one: the writer is told when a step uses it)."""
        try:
            lorebook = parse_lorebook(doc.lore, doc.lore_budget)
        except gr.Error:
            return record
        if lorebook == record.lorebook:
            return record
        return await run_in_threadpool(self.ctx.library.set_lorebook, account, record.id, lorebook)

    async def tree(self, story_id: int | None, request: gr.Request | None) -> list[Any]:
        if not story_id:
            return []
        account = await run_in_threadpool(self.account, request)
        try:
            return list(await run_in_threadpool(self.ctx.library.versions, account, story_id))
        except StoryNotFound:
            return []

    async def saved_view(
        self, record: StoryRecord, request: gr.Request | None, how: str = "autosaved"
    ) -> View:
        """The page after a save: the story's id, head, title, the save line and the tree."""
        versions = await self.tree(record.id, request)
        label = f"💾 {how} “{esc(record.title)}” · draft #{record.head} of {len(versions)}"
        return View(
            story_id=record.id,
            head=record.head,
            title=record.title,
            saved=f"{label} · {record.updated_at:%H:%M:%S}",
            tree=render_tree(versions, record.head),
            drafts=draft_choices(versions, record.head),
        )

    def text_view(self, text: str, model: str, **changes: Any) -> View:
        """The page showing ``text`` in full: the manuscript, its counter (tokens of
        ``model``'s tokenizer, when it is loaded) and its chapters, with ``changes``."""
        tokenizer = self.registry.tokenizer(model or None)
        return View(
            text=text, counts=counts(text, tokenizer), outline=render_outline(text), **changes
        )

    # -- generation -------------------------------------------------------------------------

    def sampling(self, knobs: Knobs) -> dict[str, Any]:
        """The step's options: the preset's parameters (also those without a slider, such as
        creative's min-p), the sliders over them, the step's length and seed."""
        base = self.presets.get(knobs.preset, self.registry.sampling)
        options: dict[str, Any] = base.model_dump(exclude=set(_PER_STEP))
        for name in SLIDERS:
            value = getattr(knobs, name)
            if value is not None:
                options[name] = type(getattr(base, name))(value)
        length = min(int(knobs.length), self.limits.max_new_tokens)
        options["max_new_tokens"] = length
        if knobs.seed not in (None, "", -1) and int(knobs.seed) >= 0:
            options["seed"] = int(knobs.seed)
        # Write and Continue always add something (up to 16 tokens), even where the model
        # would end the story at once (the story model sometimes does: an empty story); with
        # "the whole length" the model may not end before the step's length.
        options["min_new_tokens"] = length if knobs.full_length else min(16, length)
        return options

    def admit(
        self, prompt: str, options: dict[str, Any], request: gr.Request | None
    ) -> tuple[str, dict[str, Any]]:
        """Clean and check the texts, count the generation against the writer's rate limit."""
        try:
            prompt, options = clean_request(prompt, options, self.limits.max_prompt_chars)
            if self.ctx.limiter is not None:
                self.ctx.limiter.hit("generate", *request_identity(request))
        except TaleforgeError as exc:
            raise gr.Error(str(exc)) from None
        return prompt, options

    def _options(self, doc: Doc, knobs: Knobs, mode: str) -> dict[str, Any]:
        options = {
            **self.sampling(knobs),
            "mode": mode,
            "genre": doc.genre,
            "memory": doc.memory,
            "authors_note": doc.note,
        }
        lorebook = parse_lorebook(doc.lore, doc.lore_budget)
        if lorebook.entries:
            options["lorebook"] = lorebook
        return options

    def split(self, text: str) -> tuple[str, str]:
        """(head, tail) of a manuscript: the tail is what a Continue sends the model (half
        the prompt limit: room for memory, lore and note), the head stays in the page."""
        return _tail(text, self.limits.max_prompt_chars // 2)

    def next_step(self, doc: Doc, knobs: Knobs) -> tuple[str, dict[str, Any]]:
        """The prompt and options the next Continue sends (Write's, with no manuscript)."""
        text = clean_text(doc.text or "")
        if text.strip():
            return self.split(text)[1], self._options(doc, knobs, "continue")
        return clean_text(doc.prompt or ""), self._options(doc, knobs, _write_mode(doc))

    async def context(self, doc: Doc, knobs: Knobs) -> str:
        """The context viewer: what the model reads for the next Continue, part by part."""
        prompt, options = self.next_step(doc, knobs)
        if not prompt.strip():
            return "<p class='ctx-summary'>Nothing to continue yet: write a prompt.</p>"
        try:
            generator = await run_in_threadpool(self.registry.get, doc.model or None)
            preview = await run_in_threadpool(lambda: generator.context_preview(prompt, **options))
        except TaleforgeError as exc:
            return f"<p class='ctx-summary'>{html.escape(str(exc))}</p>"
        return render_context(preview)

    async def write(
        self, doc: Doc, knobs: Knobs, request: gr.Request | None
    ) -> AsyncIterator[View]:
        """A fresh draft from the prompt: a new story, or a new root draft of the open one
        (the earlier drafts stay in its tree)."""
        if not doc.prompt.strip():
            raise gr.Error("write a prompt first: an idea, a writing prompt or a first line")
        step = {
            "prefix": "",
            "base": "",
            "prompt": doc.prompt,
            "options": self._options(doc, knobs, _write_mode(doc)),
            "model": doc.model,
            "parent": None,
        }
        async for view in self._generate(doc, step, request):
            yield view

    async def continue_(
        self, doc: Doc, knobs: Knobs, request: gr.Request | None, *, parent: Any = HEAD
    ) -> AsyncIterator[View]:
        """Append to the manuscript (with a prompt and no manuscript yet: Write).

        ``parent``: the version the manuscript as it is now grows from (by default the one
        shown; a word's alternative branches off where the step it replaces began)."""
        text = self.check_manuscript(doc.text)
        if not text.strip():
            if doc.prompt.strip():
                async for view in self.write(doc, knobs, request):
                    yield view
                return
            raise gr.Error("there is nothing to continue: write a prompt, or type the first lines")
        await self.runs.pause(session_of(request))  # one generation at a time per writer
        # the manuscript as it is now (edits included) is a version: the new part its child
        record = await self.save(doc, text, "edit", request, parent=parent)
        assert record is not None
        doc = replace(doc, story_id=record.id, head=record.head, title=record.title)
        head, tail = self.split(text)
        step = {
            "prefix": head,
            "base": tail,
            "prompt": tail,
            "options": self._options(doc, knobs, "continue"),
            "model": doc.model,
            "parent": record.head,
        }
        yield View(story_id=record.id, head=record.head, title=record.title)
        async for view in self._generate(doc, step, request):
            yield view

    async def alternatives(self, doc: Doc, offset: int, knobs: Knobs) -> list[tuple[str, str]]:
        """What the model would have written instead of the word at ``offset`` of the
        manuscript: (label with its probability, token text), likeliest first."""
        text = doc.text or ""
        if not 0 < offset <= len(text):
            raise gr.Error("click a word of the new text (the manuscript changed meanwhile)")
        before = self.check_manuscript(text[:offset])
        prompt = self.split(before)[1]
        options = self._options(doc, knobs, "continue")
        try:
            generator = await run_in_threadpool(self.registry.get, doc.model or None)
            choices = await run_in_threadpool(
                lambda: generator.alternatives(prompt, ALTERNATIVE_TOKENS, **options)
            )
        except AttributeError:  # a remote model: its server keeps its distribution
            raise gr.Error("this model does not show its alternatives (a remote model)") from None
        except TaleforgeError as exc:
            raise gr.Error(str(exc)) from None
        return [(f"“{c.text}” · {c.probability:.1%}", c.text) for c in choices]

    async def continue_from(
        self,
        doc: Doc,
        offset: int,
        token: str,
        knobs: Knobs,
        request: gr.Request | None,
    ) -> AsyncIterator[View]:
        """The manuscript up to ``offset`` with ``token`` instead of what followed, written
        on from there: a branch beside the draft it replaces (both stay in the tree)."""
        if not token:
            raise gr.Error("pick one of the alternatives first")
        here = next(
            (v for v in await self.tree(doc.story_id, request) if v.number == doc.head), None
        )
        parent = here.parent if here is not None else HEAD
        text = (doc.text or "")[:offset] + token
        async for view in self.continue_(replace(doc, text=text), knobs, request, parent=parent):
            yield view

    async def retry(
        self, doc: Doc, knobs: Knobs, last: dict[str, Any], request: gr.Request | None
    ) -> AsyncIterator[View]:
        """The last part written again (``knobs.alternatives`` of them): siblings in the tree
        of the part they replace."""
        if not last:
            raise gr.Error("nothing to retry yet: Write or Continue first")
        options = {k: v for k, v in last["options"].items() if k != "seed"}
        options["num_stories"] = max(1, min(int(knobs.alternatives or 1), MAX_ALTERNATIVES))
        async for view in self._generate(doc, {**last, "options": options}, request):
            yield view

    async def _generate(
        self, doc: Doc, step: dict[str, Any], request: gr.Request | None
    ) -> AsyncIterator[View]:
        """Stream one step; save what it wrote (also when paused) as children of
        ``step["parent"]``."""
        prompt, options = self.admit(step["prompt"], step["options"], request)
        prefix, base, model = step["prefix"], clean_text(step["base"]), step["model"]
        session = session_of(request)
        await self.runs.pause(session)  # one generation at a time per writer
        current = self.runs.start(session)
        many = options.get("num_stories", 1) > 1
        try:
            started = time.perf_counter()
            shown = prefix + base
            yield View(
                text=shown, counts=counts(shown), status=f"⏳ writing with {model} …", fresh=""
            )
            written = ""
            stories: tuple[Any, ...] = ()
            spec = model
            try:
                async with generation(self.registry, model, prompt, **options) as (spec, stream):
                    current.stream = stream
                    if current.paused:
                        stream.cancel()
                    async for chunk in chunks(stream):
                        if current.paused:
                            break
                        if chunk.index:
                            status = f"✍️ writing alternative {chunk.index + 1} with {spec} …"
                            yield View(status=status)
                            continue
                        written += chunk.text
                        shown = prefix + (base + written if base else written.lstrip())
                        yield View(
                            text=shown, counts=counts(shown), status=f"✍️ writing with {spec} …"
                        )
                    stories = stream.stories
            except TaleforgeError as exc:
                raise gr.Error(str(exc)) from None
            seconds = time.perf_counter() - started
            if current.paused or not stories:
                texts = [shown] if shown.strip() != (prefix + base).strip() else []
                status = "⏸ paused: edit the manuscript, then Continue"
            else:
                texts = [prefix + s.text for s in stories]
                first = stories[0]
                status = (
                    f"✓ {first.generated_tokens} tokens in {seconds:.1f} s · seed {first.seed} · "
                    f"{first.finish_reason} · {spec}"
                )
                if many:
                    status += f" · {len(stories)} alternatives: ← → to compare"
            record = None
            for text in reversed(texts):  # the first alternative is saved last: the head
                record = await self.save(doc, text, "generate", request, parent=step["parent"])
                if record is not None:
                    doc = replace(doc, story_id=record.id)
            final = texts[0] if texts else shown
            if record is not None and texts:
                final = record.text  # the page shows what the library keeps, as it keeps it
            given = prefix + base
            view = self.text_view(
                final,
                spec,
                status=status,
                last={**step, "prompt": prompt},
                fresh=render_fresh(given, final[len(given) :])
                if final.startswith(given)
                else render_fresh("", final),
            )
            if record is not None:
                view = replace(view, **(await self.saved_view(record, request)).changed())
            yield view
        finally:
            self.runs.end(session, current)

    async def pause(self, request: gr.Request | None) -> bool:
        """Stop the writer's generation; True once its handler has saved and shown what was
        written (False: nothing was being written)."""
        return await self.runs.pause(session_of(request))

    # -- moving in the tree ------------------------------------------------------------------

    async def checkout(self, doc: Doc, number: int, request: gr.Request | None, why: str) -> View:
        account = await run_in_threadpool(self.account, request)
        try:
            record = await run_in_threadpool(
                self.ctx.library.checkout, account, int(doc.story_id or 0), int(number)
            )
        except StoryNotFound as exc:
            raise gr.Error(str(exc)) from None
        saved = await self.saved_view(record, request)
        return replace(
            self.text_view(record.text, doc.model, status=why, last={}, fresh=""),
            **{**saved.changed(), "saved": f"📖 “{esc(record.title)}” · draft #{record.head}"},
        )

    async def undo(self, doc: Doc, request: gr.Request | None) -> View:
        """Back to the draft the current one grew from (nothing is deleted: Redo is →/the
        tree)."""
        versions = {v.number: v for v in await self.tree(doc.story_id, request)}
        here = versions.get(doc.head or 0)
        if here is None or here.parent is None:
            return View(status="nothing to undo: this is where the story begins")
        return await self.checkout(doc, here.parent, request, f"↩ back to draft #{here.parent}")

    async def sibling(self, doc: Doc, step: int, request: gr.Request | None) -> View:
        """The previous (−1) or next (+1) alternative of the current draft."""
        versions = await self.tree(doc.story_id, request)
        here = next((v for v in versions if v.number == doc.head), None)
        if here is None:
            return View(status="no alternatives yet: Retry writes some")
        siblings = [v.number for v in versions if v.parent == here.parent]
        at = siblings.index(here.number) + step
        if not 0 <= at < len(siblings):
            side = "first" if step < 0 else "last"
            return View(status=f"this is the {side} of {len(siblings)} alternatives")
        why = f"alternative {at + 1} of {len(siblings)} (draft #{siblings[at]})"
        return await self.checkout(doc, siblings[at], request, why)

    async def open(self, story_id: int, request: gr.Request | None) -> tuple[StoryRecord, View]:
        """A library story opened in the editor (a new document key naming it)."""
        account = await run_in_threadpool(self.account, request)
        try:
            record = await run_in_threadpool(self.ctx.library.get, account, int(story_id))
        except StoryNotFound as exc:
            raise gr.Error(str(exc)) from None
        key = new_doc()
        self.remember(key, record.id)
        saved = await self.saved_view(record, request)
        view = self.text_view(
            record.text,
            record.model or "",
            status="",
            last={},
            fresh="",
            doc=key,
            lore=format_lorebook(record.lorebook),
            lore_budget=record.lorebook.budget,
        )
        opened = f"📖 opened “{esc(record.title)}” (draft #{record.head})"
        return record, replace(view, **{**saved.changed(), "saved": opened})

    def export(self, doc: Doc, fmt: str) -> str:
        """The manuscript as a file named after the title (the prompt's first line if none)."""
        if not doc.text.strip():
            raise gr.Error("the story is empty: nothing to export")
        title = (doc.title.strip() or (doc.prompt.strip().splitlines() or ["story"])[0])[:60]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower() or "story"
        body = f"# {title}\n\n{doc.text}\n" if fmt == ".md" else doc.text + "\n"
        return str(self.ctx.exports.write(f"{slug}{fmt}", body.encode("utf-8")))
