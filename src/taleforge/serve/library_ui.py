"""The studio's story library: save and autosave, and the Library tab (search, open, rename,
delete with undo, versions, export, rating).

Every handler acts for the writer of the request (``gr.Request.username``, set from the
session by the account middleware) and goes through :class:`taleforge.store.Library`, which
never shows one writer's story to another.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from starlette.concurrency import run_in_threadpool

from taleforge.errors import TaleforgeError
from taleforge.genres import GENRES
from taleforge.serve.context import AppContext
from taleforge.serve.sanitize import check_length, clean_text
from taleforge.store import Account, StoryNotFound, StoryRecord
from taleforge.store.export import export_story, filename

COLUMNS = ["id", "title", "genre", "words", "updated", "rating"]


def esc(text: Any) -> str:
    """Text safe inside a Markdown component: HTML escaped, Markdown's specials too."""
    escaped = html.escape(str(text), quote=True)
    for char in "\\`*_[]()#!|~<>":
        escaped = escaped.replace(char, "\\" + char)
    return escaped


@dataclass
class WriteParts:
    """How the Library tab opens a story in the Write tab: the studio's handler (story id →
    updates) and the components it fills."""

    on_open: Callable[..., Any]
    outputs: list[Any]


class StudioLibrary:
    """The Library tab and the writer of each request, bound to one server's context."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._accounts: dict[str, Account] = {}

    def account(self, request: gr.Request | None) -> Account:
        name = getattr(request, "username", None) if request is not None else None
        if not name:
            if self.ctx.accounts_required:
                raise gr.Error("log in first: your session has ended")
            return self.ctx.accounts.local_user()
        if name not in self._accounts:
            account = self.ctx.accounts.by_name(name)
            if account is None:
                raise gr.Error("log in again: this account no longer exists")
            self._accounts[name] = account
        return self._accounts[name]

    def _text(self, value: str, field: str, limit: int, setting: str = "max_prompt_chars") -> str:
        value = clean_text(value or "")
        try:
            check_length(value, limit, field, setting)
        except TaleforgeError as exc:
            raise gr.Error(str(exc)) from None
        return value

    # -- the Library tab ---------------------------------------------------------------------

    def rows(self, stories: list[StoryRecord]) -> list[list[Any]]:
        return [
            [
                s.id,
                s.title,
                s.genre or "",
                len(s.text.split()),
                s.updated_at.strftime("%Y-%m-%d %H:%M"),
                "★" * s.rating if s.rating else "",
            ]
            for s in stories
        ]

    def build_tab(self, write: WriteParts) -> None:
        """The Library tab (call inside ``gr.Tabs``)."""
        library = self.ctx.library

        with gr.Tab("Library", id="library") as tab:
            with gr.Row():
                query = gr.Textbox(
                    placeholder="Search titles and text …",
                    show_label=False,
                    scale=4,
                    elem_id="library-search",
                )
                genre = gr.Dropdown(["any", *GENRES], value="any", show_label=False, scale=1)
                search_btn = gr.Button("Search", scale=1, elem_id="library-search-btn")
            table = gr.Dataframe(
                headers=COLUMNS,
                datatype=["number", "str", "str", "number", "str", "str"],
                interactive=False,
                elem_id="library-table",
                label="Your stories (click one to select it)",
            )
            with gr.Row():
                chosen = gr.Number(
                    None, label="Selected story id", precision=0, elem_id="library-id", scale=1
                )
                open_btn = gr.Button("Open in Write", variant="primary", elem_id="open-btn")
                delete_btn = gr.Button("Delete", variant="stop", elem_id="delete-btn")
                undo_btn = gr.Button("Undo delete", elem_id="undelete-btn", visible=False)
            deleted = gr.State(None)
            status = gr.Markdown("", elem_id="library-status")
            with gr.Accordion("Rename, export, rate, versions", open=False):
                with gr.Row():
                    new_title = gr.Textbox(label="New title", scale=3, elem_id="rename-title")
                    rename_btn = gr.Button("Rename", scale=1, elem_id="rename-btn")
                with gr.Row():
                    fmt = gr.Radio(["txt", "md", "epub"], value="txt", label="Export as")
                    export_btn = gr.Button("Export", elem_id="library-export-btn")
                    export_file = gr.File(label="File", elem_id="library-export")
                with gr.Row():
                    stars = gr.Slider(1, 5, 3, step=1, label="Rating (stars)")
                    comment = gr.Textbox(label="Comment (optional)", scale=2)
                    rate_btn = gr.Button("Rate", elem_id="rate-btn")
                with gr.Row():
                    versions = gr.Dropdown([], label="Versions", scale=3, elem_id="versions")
                    restore_btn = gr.Button("Restore version", scale=1, elem_id="restore-btn")

        async def refresh(text: str, genre_name: str, request: gr.Request) -> Any:
            account = await run_in_threadpool(self.account, request)
            found = await run_in_threadpool(
                lambda: library.search(
                    account,
                    clean_text(text or "")[:500],
                    genre=None if genre_name == "any" else genre_name,
                )
            )
            return self.rows(found)

        def selected(evt: gr.SelectData, data: Any) -> Any:
            row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
            try:
                return int(data.iloc[row, 0]) if hasattr(data, "iloc") else int(data[row][0])
            except (IndexError, ValueError, TypeError, KeyError):
                return gr.skip()

        async def get(story_id: Any, request: gr.Request) -> tuple[Account, StoryRecord]:
            if story_id in (None, "") or int(story_id) <= 0:
                raise gr.Error("select a story first: click it in the list")
            account = await run_in_threadpool(self.account, request)
            try:
                record = await run_in_threadpool(library.get, account, int(story_id))
            except StoryNotFound as exc:
                raise gr.Error(str(exc)) from None
            return account, record

        async def delete(story_id: Any, text: str, genre_name: str, request: gr.Request) -> Any:
            account, record = await get(story_id, request)
            until = await run_in_threadpool(library.delete, account, record.id)
            rows = await refresh(text, genre_name, request)
            message = f"🗑 deleted “{esc(record.title)}” — Undo until {until:%H:%M:%S} UTC"
            return rows, message, record.id, gr.Button(visible=True)

        async def undelete(story_id: Any, text: str, genre_name: str, request: gr.Request) -> Any:
            if not story_id:
                raise gr.Error("nothing to undo")
            account = await run_in_threadpool(self.account, request)
            try:
                record = await run_in_threadpool(library.undelete, account, int(story_id))
            except StoryNotFound as exc:
                raise gr.Error(str(exc)) from None
            rows = await refresh(text, genre_name, request)
            return rows, f"↩ restored “{esc(record.title)}”", None, gr.Button(visible=False)

        async def rename(
            story_id: Any, title: str, text: str, genre_name: str, request: gr.Request
        ) -> Any:
            account, record = await get(story_id, request)
            title = self._text(title, "title", 200)
            try:
                record = await run_in_threadpool(library.rename, account, record.id, title)
            except TaleforgeError as exc:
                raise gr.Error(str(exc)) from None
            return await refresh(text, genre_name, request), f"✏️ renamed to “{esc(record.title)}”"

        async def export(story_id: Any, fmt_name: str, request: gr.Request) -> str:
            _, record = await get(story_id, request)
            data = await run_in_threadpool(export_story, record, fmt_name)
            path = await run_in_threadpool(self.ctx.exports.write, filename(record, fmt_name), data)
            return str(path)

        async def rate(
            story_id: Any, score: float, note: str, text: str, genre_name: str, request: gr.Request
        ) -> Any:
            account, record = await get(story_id, request)
            note = self._text(note, "comment", 5000)
            record = await run_in_threadpool(library.rate, account, record.id, int(score), note)
            rows = await refresh(text, genre_name, request)
            return rows, f"⭐ rated “{esc(record.title)}” {int(score)}/5 — thank you"

        def version_choices(found: list[Any]) -> Any:
            return gr.Dropdown(
                choices=[
                    (
                        f"#{v.number} · {v.kind} · {v.words} words · "
                        f"{v.created_at:%Y-%m-%d %H:%M:%S}",
                        v.number,
                    )
                    for v in reversed(found)
                ],
                value=None,
            )

        async def list_versions(story_id: Any, request: gr.Request) -> Any:
            """The selected story's versions, and a line saying which story is selected
            (stories may share a title)."""
            if not story_id:
                return version_choices([]), ""
            account = await run_in_threadpool(self.account, request)
            try:
                record = await run_in_threadpool(library.get, account, int(story_id))
                found = await run_in_threadpool(library.versions, account, int(story_id))
            except StoryNotFound:
                return version_choices([]), ""
            line = (
                f"▶ selected #{record.id} “{esc(record.title)}” · "
                f"{len(record.text.split()):,} words · {len(found)} drafts · "
                f"updated {record.updated_at:%Y-%m-%d %H:%M}"
            )
            return version_choices(found), line

        async def restore(story_id: Any, number: Any, request: gr.Request) -> Any:
            account, record = await get(story_id, request)
            if number in (None, ""):
                raise gr.Error("pick a version to restore")
            try:
                record = await run_in_threadpool(
                    library.restore_version, account, record.id, int(number)
                )
            except StoryNotFound as exc:
                raise gr.Error(str(exc)) from None
            return (
                f"⏪ restored version {int(number)} of “{esc(record.title)}” "
                f"(now version {record.head})"
            )

        search_inputs = [query, genre]
        tab.select(refresh, search_inputs, [table])
        search_btn.click(refresh, search_inputs, [table])
        query.submit(refresh, search_inputs, [table])
        table.select(selected, [table], [chosen]).then(list_versions, [chosen], [versions, status])
        open_btn.click(write.on_open, [chosen], write.outputs)
        delete_btn.click(delete, [chosen, *search_inputs], [table, status, deleted, undo_btn])
        undo_btn.click(undelete, [deleted, *search_inputs], [table, status, deleted, undo_btn])
        rename_btn.click(rename, [chosen, new_title, *search_inputs], [table, status])
        export_btn.click(export, [chosen, fmt], [export_file])
        rate_btn.click(rate, [chosen, stars, comment, *search_inputs], [table, status])

        async def versions_only(story_id: Any, request: gr.Request) -> Any:
            """The versions after a restore (the status line says "restored")."""
            account = await run_in_threadpool(self.account, request)
            try:
                found = await run_in_threadpool(library.versions, account, int(story_id))
            except StoryNotFound:
                found = []
            return version_choices(found)

        restore_btn.click(restore, [chosen, versions], [status]).then(
            versions_only, [chosen], [versions]
        )
