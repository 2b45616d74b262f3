"""Who is asking: sessions, API tokens, CSRF, and the log-in, sign-up and account pages.

- Anonymous mode (the default on 127.0.0.1): every request acts as the built-in local writer.
- Accounts mode (``--serve.accounts``, and always when bound to a non-local address): the
  studio and the API need a log-in. Browsers get a signed session cookie (HttpOnly,
  SameSite=Lax, Secure under HTTPS) that names a server-side session: logging out (here or
  everywhere), a password change or the idle and absolute lifetimes
  (``serve.session_idle_seconds``, ``serve.session_max_seconds``) end it at once. Programs
  send ``Authorization: Bearer tf_…`` API tokens.
- Every state-changing form post carries a CSRF token bound to the session; JSON API writes
  authenticated by the cookie (not a token) carry it in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from taleforge.files import private_dir
from taleforge.serve.context import AppContext
from taleforge.serve.limits import RateLimited
from taleforge.store import Account, AccountError

log = logging.getLogger(__name__)

SESSION_COOKIE = "taleforge_session"
SECRET_ENV = "TALEFORGE_SECRET_KEY"
#: Reachable without logging in.
OPEN_PATHS = ("/health", "/metrics", "/login", "/signup", "/favicon.ico")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(default=True),
)


def secret_key(ctx: AppContext) -> str:
    """``$TALEFORGE_SECRET_KEY``, else a key kept in a 0600 file next to the database (or in
    the user's data directory): sessions survive restarts, and processes sharing the file or
    the variable accept each other's cookies."""
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV]
    database = ctx.db.url.database if ctx.db.is_sqlite else None
    if database and database != ":memory:":
        folder = Path(database).expanduser().resolve().parent
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        folder = base / "taleforge"
    path = folder / "secret_key"
    private_dir(folder)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(descriptor, 0o600)  # whatever the umask
    except FileExistsError:
        key = path.read_text().strip()
        if len(key) >= 32:
            return key
        raise RuntimeError(f"{path} holds no usable key: delete it to make a new one") from None
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use)."""
    session = request.session
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def csrf_ok(request: Request, given: str | None) -> bool:
    expected = request.session.get("csrf")
    return bool(expected and given and secrets.compare_digest(str(expected), str(given)))


def account_of(request: Any) -> Account:
    """The account a (FastAPI) request acts for; set by :class:`AccountMiddleware`."""
    account = request.scope.get("state", {}).get("account")
    if account is None:  # only open paths get here without one
        raise RuntimeError("no account on this request")
    return account


def client_ip(request: Any) -> str:
    client = getattr(request, "client", None)
    return str(client.host) if client is not None and client.host else "unknown"


def _safe_next(target: str | None) -> str:
    """Only local paths: never redirect to another site after log-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class AccountMiddleware:
    """Puts the account on ``scope["state"]["account"]`` or answers 401 / a log-in redirect."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx
        self._local: Account | None = None

    def _from_session(self, session: dict[str, Any]) -> Account | None:
        session_id = session.get("sid")
        if not isinstance(session_id, str):
            return None
        # Looked up on every request (a primary-key read): a log-out, a changed password or
        # a deleted account ends the session at once, in every server process.
        serve = self.ctx.config.serve
        return self.ctx.accounts.session_account(
            session_id, serve.session_idle_seconds, serve.session_max_seconds
        )

    def _resolve(self, scope: Scope) -> tuple[Account | None, str]:
        if not self.ctx.accounts_required:
            if self._local is None:
                self._local = self.ctx.accounts.local_user()
            return self._local, "local"
        request = Request(scope)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self.ctx.accounts.verify_token(token.strip()), "token"
        return self._from_session(scope.get("session") or {}), "session"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        account, via = await run_in_threadpool(self._resolve, scope)
        state = scope.setdefault("state", {})
        state["account"], state["auth_via"] = account, via
        path: str = scope.get("path", "")
        if account is not None or path in OPEN_PATHS or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if path.startswith(("/api", "/v1")) or request.method not in ("GET", "HEAD"):
            message = (
                "this API token is not valid (revoked or mistyped): make a new one on /account"
                if via == "token"
                else "log in first: in a browser on /login, or send 'Authorization: Bearer "
                "<API token>' (make one on /account)"
            )
            response: Response = JSONResponse(
                {
                    "error": {
                        "message": message,
                        "type": "authentication_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        else:
            target = path + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
            response = RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        await response(scope, receive, send)


def _page(name: str, request: Request, status: int = 200, **values: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(csrf=csrf_token(request), **values)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def build_auth_router(ctx: AppContext) -> APIRouter:
    """The log-in, sign-up, log-out and account pages."""
    router = APIRouter(include_in_schema=False)
    accounts = ctx.accounts

    async def log_in(request: Request, account: Account) -> None:
        request.session.clear()  # a new session: nothing carried over from before log-in
        request.session["sid"] = await run_in_threadpool(accounts.start_session, account)
        request.session["csrf"] = secrets.token_urlsafe(32)

    def limited(request: Request, name: str) -> RateLimited | None:
        """Counts a log-in-like attempt; the refusal when over the limit."""
        try:
            if ctx.limiter is not None:
                ctx.limiter.hit("login", client_ip(request), name.strip().lower())
        except RateLimited as exc:
            log.warning("log-in rate limit for %r from %s", name[:64], client_ip(request))
            return exc
        return None

    def with_retry(page: HTMLResponse, refused: RateLimited) -> HTMLResponse:
        page.headers["Retry-After"] = str(refused.retry_after)
        return page

    async def account_view(
        request: Request, account: Account, status: int = 200, **extra: Any
    ) -> HTMLResponse:
        tokens = await run_in_threadpool(accounts.tokens, account)
        return _page(
            "account.html",
            request,
            status,
            account=account,
            accounts_required=ctx.accounts_required,
            tokens=tokens,
            **extra,
        )

    def refuse(request: Request) -> HTMLResponse:
        return _page(
            "message.html",
            request,
            403,
            title="Form expired",
            message="This form has expired or came from another site. Go back, reload "
            "the page and send it again.",
        )

    async def account_form(request: Request, csrf_token: str) -> Account | Response:
        """The writer of an /account form that may go on, or the page that refuses it (an
        expired or foreign form, or too many tries)."""
        if not csrf_ok(request, csrf_token):
            return refuse(request)
        account = account_of(request)
        refused = limited(request, account.username)
        if refused is not None:
            page = await account_view(request, account, 429, error=str(refused))
            return with_retry(page, refused)
        return account

    @router.get("/login")
    async def login_page(request: Request, next: str = "/") -> Response:
        if not ctx.accounts_required:
            return RedirectResponse("/", status_code=303)
        return _page("login.html", request, next=_safe_next(next))

    @router.post("/login")
    async def login(
        request: Request,
        username: str = Form("", max_length=200),
        password: str = Form("", max_length=2000),
        csrf_token: str = Form(""),
        next: str = Form("/"),
    ) -> Response:
        if not csrf_ok(request, csrf_token):
            return refuse(request)
        refused = limited(request, username)
        if refused is not None:
            return with_retry(
                _page("login.html", request, 429, next=_safe_next(next), username=username,
                      error=str(refused)),
                refused,
            )  # fmt: skip
        account = await run_in_threadpool(accounts.authenticate, username, password)
        if account is None:
            log.info("failed log-in for %r from %s", username[:64], client_ip(request))
            return _page(
                "login.html",
                request,
                401,
                next=_safe_next(next),
                username=username,
                error="Wrong user name or password.",
            )
        await log_in(request, account)
        return RedirectResponse(_safe_next(next), status_code=303)

    @router.get("/signup")
    async def signup_page(request: Request) -> Response:
        if not ctx.accounts_required:
            return RedirectResponse("/", status_code=303)
        return _page("signup.html", request)

    @router.post("/signup")
    async def signup(
        request: Request,
        username: str = Form("", max_length=200),
        password: str = Form("", max_length=2000),
        password2: str = Form("", max_length=2000),
        csrf_token: str = Form(""),
    ) -> Response:
        if not csrf_ok(request, csrf_token):
            return refuse(request)
        if not ctx.accounts_required:
            return RedirectResponse("/", status_code=303)
        refused = limited(request, "signup")
        if refused is not None:
            page = _page("signup.html", request, 429, username=username, error=str(refused))
            return with_retry(page, refused)
        try:
            if password != password2:
                raise AccountError("the two passwords differ: type the same password twice")
            account = await run_in_threadpool(accounts.sign_up, username, password)
        except AccountError as exc:
            return _page("signup.html", request, 400, username=username, error=str(exc))
        await log_in(request, account)
        return RedirectResponse("/", status_code=303)

    @router.post("/logout")
    async def logout(request: Request, csrf_token: str = Form("")) -> Response:
        if not csrf_ok(request, csrf_token):
            return refuse(request)
        session_id = request.session.get("sid")
        if isinstance(session_id, str):
            await run_in_threadpool(accounts.end_session, session_id)
        request.session.clear()
        return RedirectResponse("/login" if ctx.accounts_required else "/", status_code=303)

    @router.post("/logout/everywhere")
    async def logout_everywhere(request: Request, csrf_token: str = Form("")) -> Response:
        if not csrf_ok(request, csrf_token):
            return refuse(request)
        ended = await run_in_threadpool(accounts.end_sessions, account_of(request))
        log.info("%s logged out everywhere (%d sessions)", account_of(request).username, ended)
        request.session.clear()
        return RedirectResponse("/login" if ctx.accounts_required else "/", status_code=303)

    @router.get("/account")
    async def account_page(request: Request) -> Response:
        return await account_view(
            request,
            account_of(request),
            new_token=request.session.pop("new_token", None),
            message=request.session.pop("flash", None),
        )

    @router.post("/account/password")
    async def change_password(
        request: Request,
        current: str = Form("", max_length=2000),
        new: str = Form("", max_length=2000),
        new2: str = Form("", max_length=2000),
        csrf_token: str = Form(""),
    ) -> Response:
        account = await account_form(request, csrf_token)
        if isinstance(account, Response):
            return account
        try:
            if account.is_local:
                raise AccountError("the local writer of anonymous mode has no password")
            if new != new2:
                raise AccountError("the two new passwords differ: type the same one twice")
            await run_in_threadpool(accounts.change_password, account, current, new)
        except AccountError as exc:
            return await account_view(request, account, 400, error=str(exc))
        await log_in(request, account)  # a new session here; all the others have ended
        request.session["flash"] = (
            "Password changed. Other sessions are logged out and API tokens revoked."
        )
        return RedirectResponse("/account", status_code=303)

    @router.post("/account/delete")
    async def delete_account(
        request: Request, password: str = Form("", max_length=2000), csrf_token: str = Form("")
    ) -> Response:
        account = await account_form(request, csrf_token)
        if isinstance(account, Response):
            return account
        try:
            await run_in_threadpool(accounts.delete_account, account, password)
        except AccountError as exc:
            return await account_view(request, account, 400, error=str(exc))
        log.info("account %s deleted", account.username)
        request.session.clear()
        return RedirectResponse("/login" if ctx.accounts_required else "/", status_code=303)

    @router.post("/account/tokens")
    async def new_token(
        request: Request, name: str = Form("api", max_length=100), csrf_token: str = Form("")
    ) -> Response:
        if not csrf_ok(request, csrf_token):
            return refuse(request)
        token = await run_in_threadpool(accounts.create_token, account_of(request), name)
        request.session["new_token"] = token
        return RedirectResponse("/account", status_code=303)

    @router.post("/account/tokens/{token_id}/revoke")
    async def revoke_token(request: Request, token_id: int, csrf_token: str = Form("")) -> Response:
        if not csrf_ok(request, csrf_token):
            return refuse(request)
        await run_in_threadpool(accounts.revoke_token, account_of(request), token_id)
        request.session["flash"] = "Token revoked."
        return RedirectResponse("/account", status_code=303)

    return router


def check_api_csrf(request: Request) -> None:
    """JSON writes authenticated by the session cookie must carry ``X-CSRF-Token``."""
    from taleforge.serve.api import APIError

    state = request.scope.get("state", {})
    if request.method in SAFE_METHODS or state.get("auth_via") != "session":
        return
    if not csrf_ok(request, request.headers.get("x-csrf-token")):
        raise APIError(
            403,
            "missing or wrong X-CSRF-Token header (send the token from /api/me, or use an "
            "API token instead of the browser session)",
            "csrf_error",
        )
