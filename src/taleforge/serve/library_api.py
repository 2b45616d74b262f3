"""``/api/me``, ``/api/stories`` and ``/api/tokens``: each writer's library over HTTP.

A story of another writer answers 404 exactly like a missing one. Writes authenticated by
the browser session need the ``X-CSRF-Token`` header (``GET /api/me`` tells it); programs use
API tokens instead.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from taleforge.config import SamplingParams, optional_fields
from taleforge.generate.lore import Lorebook
from taleforge.serve.api import APIError
from taleforge.serve.api_errors import invalid_body
from taleforge.serve.auth import account_of, check_api_csrf, csrf_token
from taleforge.serve.context import AppContext
from taleforge.serve.sanitize import CleanText, TextTooLong, check_length, clean_json, clean_text
from taleforge.store import LibraryError, StoryNotFound
from taleforge.store.export import FORMATS, as_of, export_story, filename
from taleforge.store.library import HEAD, MAX_TITLE

ID = 2**62  # larger ids cannot exist; answered as "not found", never as a server error


class StoryIn(
    create_model(  # type: ignore[misc]
        "_StorySeed",
        # the seed it was written with: SamplingParams' own field and bounds
        **optional_fields(SamplingParams, exclude=set(SamplingParams.model_fields) - {"seed"}),
    )
):
    """``POST /api/stories``: save a story."""

    model_config = ConfigDict(extra="forbid")

    text: CleanText = Field(..., description="The story.")
    title: CleanText | None = Field(None, max_length=MAX_TITLE, description="Default: first line.")
    prompt: CleanText = ""
    genre: CleanText | None = Field(None, max_length=32)
    mode: CleanText = Field("story", max_length=32)
    model: CleanText | None = Field(None, max_length=300)
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="The generation settings (a flat JSON object)."
    )

    @field_validator("parameters")
    @classmethod
    def _flat_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > 64:
            raise ValueError("at most 64 settings")
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, str):
                item = clean_text(item)[:1000]
            elif isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"setting {key[:40]!r} is not a finite number")
            elif item is not None and not isinstance(item, bool | int | float):
                raise ValueError("settings are numbers, strings, true/false or null")
            cleaned[clean_text(key)[:64]] = item
        return cleaned


class StoryPatch(BaseModel):
    """``PATCH /api/stories/{id}``: new text and/or title (each change is a version)."""

    model_config = ConfigDict(extra="forbid")

    text: CleanText | None = None
    title: CleanText | None = Field(None, max_length=MAX_TITLE)
    kind: Literal["save", "autosave", "edit"] = "save"
    parent: int | None = Field(
        None,
        ge=1,
        description="The version the new one grows from (left out: the head, the version "
        "shown; null: a new root, a fresh draft).",
    )


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: int = Field(..., ge=1, le=5, description="1 to 5 stars.")
    comment: CleanText = Field("", max_length=5000)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: CleanText = Field("api", max_length=100)


def _disk_full(exc: OperationalError) -> bool:
    return "disk is full" in str(exc.orig) or getattr(exc.orig, "sqlstate", None) == "53100"


def _not_found(exc: Exception) -> APIError:
    return APIError(404, str(exc), "not_found", "id")


def build_library_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api", dependencies=[Depends(check_api_csrf)])
    library, limits = ctx.library, ctx.config.serve

    def text_field(value: str, name: str) -> str:
        """Cleaned (one line-break style, no controls, NFC) and within the story limit."""
        value = clean_text(value)
        setting = "max_story_chars" if name == "text" else "max_prompt_chars"
        try:
            check_length(value, getattr(limits, setting), name, setting)
        except TextTooLong as exc:  # no app-wide handler maps it: it was a bare 500
            raise APIError(exc.status, str(exc), "invalid_request_error", exc.field) from None
        return value

    async def call(function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await run_in_threadpool(function, *args, **kwargs)
        except StoryNotFound as exc:
            raise _not_found(exc) from None
        except LibraryError as exc:
            raise APIError(422, str(exc), "invalid_request_error") from None
        except OperationalError as exc:
            # SQLite's SQLITE_FULL, PostgreSQL's disk_full (53100): the save was rolled back
            # and the writer must be told, not shown a bare 500.
            if not _disk_full(exc):
                raise
            raise APIError(
                507, "the server's disk is full: this change was not saved", "storage_full"
            ) from None

    def story_id(value: int) -> int:
        if not 0 < value < ID:
            raise APIError(404, f"no story {value} in your library", "not_found", "id")
        return value

    def version_number(id: int, number: int, field: str = "number") -> int:
        if not 0 < number < ID:
            raise APIError(404, f"story {id} has no version {number}", "not_found", field)
        return number

    @router.get("/me", tags=["library"])
    async def me(request: Request) -> dict[str, Any]:
        """Who you are, whether this server has accounts, and the CSRF token for writes."""
        account = account_of(request)
        return {
            "username": account.username,
            "accounts": ctx.accounts_required,
            "csrf_token": csrf_token(request),
        }

    @router.get("/stories", tags=["library"])
    async def list_stories(
        request: Request,
        q: str = Query("", max_length=500, description="Words in the title or text."),
        genre: str | None = Query(None, max_length=32),
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=10**9),
    ) -> dict[str, Any]:
        """Your stories, newest first (``q`` searches titles and texts, any case)."""
        # Cleaned like every stored text (a NUL in the query was a 500 on PostgreSQL).
        q, genre = clean_text(q), None if genre is None else clean_text(genre)
        stories = await call(
            library.search, account_of(request), q, genre=genre, limit=limit, offset=offset
        )
        return {"stories": [_summary(s) for s in stories]}

    @router.post("/stories", status_code=201, tags=["library"])
    async def create_story(request: Request, body: StoryIn) -> dict[str, Any]:
        """Save a story to your library."""
        fields = body.model_dump()
        fields["text"] = text_field(body.text, "text")
        fields["prompt"] = text_field(body.prompt, "prompt")
        if body.title is not None:
            fields["title"] = text_field(body.title, "title")
        story = await call(library.create, account_of(request), **fields)
        return dict(story.to_dict())

    @router.get("/stories/{id}", tags=["library"])
    async def get_story(request: Request, id: int) -> dict[str, Any]:
        story = await call(library.get, account_of(request), story_id(id))
        return dict(story.to_dict())

    @router.patch("/stories/{id}", tags=["library"])
    async def update_story(request: Request, id: int, body: StoryPatch) -> dict[str, Any]:
        """Change the text and/or the title; the earlier state stays as a version."""
        text = text_field(body.text, "text") if body.text is not None else None
        title = text_field(body.title, "title") if body.title is not None else None
        parent: Any = HEAD
        if "parent" in body.model_fields_set:
            parent = None if body.parent is None else version_number(id, body.parent, "parent")
        story = await call(
            library.update,
            account_of(request),
            story_id(id),
            text=text,
            title=title,
            kind=body.kind,
            parent=parent,
        )
        return dict(story.to_dict())

    @router.delete("/stories/{id}", tags=["library"])
    async def delete_story(request: Request, id: int) -> dict[str, Any]:
        """Move a story to the bin; ``POST /api/stories/{id}/undelete`` brings it back."""
        until = await call(library.delete, account_of(request), story_id(id))
        return {"deleted": True, "id": id, "undo_until": until.isoformat()}

    @router.post("/stories/{id}/undelete", tags=["library"])
    async def undelete_story(request: Request, id: int) -> dict[str, Any]:
        story = await call(library.undelete, account_of(request), story_id(id))
        return dict(story.to_dict())

    @router.get("/stories/{id}/versions", tags=["library"])
    async def story_versions(request: Request, id: int) -> dict[str, Any]:
        """Every version, each with the ``parent`` it grew from, and the ``head`` shown."""
        account = account_of(request)
        versions = await call(library.versions, account, story_id(id))
        story = await call(library.get, account, id)
        return {"head": story.head, "versions": [v.to_dict() for v in versions]}

    @router.post("/stories/{id}/versions/{number}/restore", tags=["library"])
    async def restore_version(request: Request, id: int, number: int) -> dict[str, Any]:
        """Make an earlier version current (the present text stays as a version too)."""
        number = version_number(id, number)
        story = await call(library.restore_version, account_of(request), story_id(id), number)
        return dict(story.to_dict())

    @router.post("/stories/{id}/versions/{number}/checkout", tags=["library"])
    async def checkout_version(request: Request, id: int, number: int) -> dict[str, Any]:
        """Show another version (another branch): it becomes the head, nothing is added."""
        number = version_number(id, number)
        story = await call(library.checkout, account_of(request), story_id(id), number)
        return dict(story.to_dict())

    @router.get("/stories/{id}/lorebook", tags=["library"])
    async def get_lorebook(request: Request, id: int) -> dict[str, Any]:
        story = await call(library.get, account_of(request), story_id(id))
        return story.lorebook.model_dump(mode="json")

    @router.put("/stories/{id}/lorebook", tags=["library"])
    async def put_lorebook(request: Request, id: int, body: Lorebook) -> dict[str, Any]:
        """Replace the story's lorebook (not a version of the text)."""
        try:  # its texts cleaned like every stored text, then checked again
            lorebook = Lorebook.model_validate(clean_json(body.model_dump()))
        except ValidationError as exc:
            raise invalid_body(RequestValidationError(exc.errors()), Lorebook) from None
        story = await call(library.set_lorebook, account_of(request), story_id(id), lorebook)
        return story.lorebook.model_dump(mode="json")

    @router.post("/stories/{id}/rating", tags=["library"])
    async def rate_story(request: Request, id: int, body: RatingIn) -> dict[str, Any]:
        """Rate a story 1-5 (used by the human evaluation)."""
        comment = text_field(body.comment, "comment")
        story = await call(library.rate, account_of(request), story_id(id), body.score, comment)
        return dict(story.to_dict())

    @router.get("/stories/{id}/export", tags=["library"])
    async def export(
        request: Request,
        id: int,
        format: Literal["txt", "md", "epub"] = "txt",
        version: int | None = Query(None, description="That version's draft (default: head)."),
    ) -> Response:
        """The story as a .txt, .md or .epub file."""
        account = account_of(request)
        story = await call(library.get, account, story_id(id))
        if version is not None:
            draft = await call(library.version, account, id, version_number(id, version, "version"))
            story = as_of(story, draft)
        data = await run_in_threadpool(export_story, story, format)
        name = filename(story, format)
        return Response(
            data,
            media_type=FORMATS[format],
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @router.get("/tokens", tags=["accounts"])
    async def list_tokens(request: Request) -> dict[str, Any]:
        tokens = await run_in_threadpool(ctx.accounts.tokens, account_of(request))
        return {
            "tokens": [
                {"id": t.id, "name": t.name, "prefix": t.prefix, "created_at": t.created_at}
                for t in tokens
            ]
        }

    @router.post("/tokens", status_code=201, tags=["accounts"])
    async def create_token(request: Request, body: TokenIn) -> dict[str, Any]:
        """A new API token (its text is shown only in this answer)."""
        name = text_field(body.name, "name")
        token = await run_in_threadpool(ctx.accounts.create_token, account_of(request), name)
        return {"token": token, "name": name}

    @router.delete("/tokens/{token_id}", tags=["accounts"])
    async def revoke_token(request: Request, token_id: int) -> dict[str, Any]:
        if not 0 < token_id < ID or not await run_in_threadpool(
            ctx.accounts.revoke_token, account_of(request), token_id
        ):
            raise APIError(404, f"you have no API token {token_id}", "not_found", "token_id")
        return {"revoked": True, "id": token_id}

    return router


def _summary(story: Any) -> dict[str, Any]:
    data = story.to_dict()
    del data["lorebook"]  # up to a few hundred KB a story: GET /api/stories/{id}/lorebook
    text = data.pop("text")
    data["words"] = len(text.split())
    data["excerpt"] = text[:200]
    return dict(data)
