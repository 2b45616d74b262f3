"""``create_app(config)``: one FastAPI server with the API and the Gradio studio at ``/``.

``serve(config)`` runs it with uvicorn (HTTPS with a certificate and key, an optional
public share link, optional basic auth).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from taleforge import __version__
from taleforge.config import TaleforgeConfig
from taleforge.errors import ConfigError
from taleforge.serve import guard
from taleforge.serve.api import APIError, build_router
from taleforge.serve.api_errors import body_model, invalid_body
from taleforge.serve.auth import (
    SESSION_COOKIE,
    AccountMiddleware,
    build_auth_router,
    secret_key,
)
from taleforge.serve.context import LOCAL_HOSTS, AppContext
from taleforge.serve.kobold import KoboldError, build_kobold_router
from taleforge.serve.library_api import build_library_router
from taleforge.serve.limits import install as install_limits
from taleforge.serve.metrics import METRICS_PATH, add_metrics_route
from taleforge.serve.registry import ModelRegistry
from taleforge.serve.sanitize import describe_body_error

log = logging.getLogger(__name__)

#: Paths answered without basic auth (health checks of load balancers).
OPEN_PATHS = ("/health", METRICS_PATH)


def _error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    return APIError(status, message, kind, param).response()


def create_app(config: TaleforgeConfig, registry: ModelRegistry | None = None) -> FastAPI:
    """The whole server: ``/api``, ``/v1`` (OpenAI-compatible), ``/health`` and the UI."""
    import gradio as gr

    from taleforge.serve.ui import CSS, JS, build_ui

    ctx = AppContext.build(config, registry)
    registry = ctx.registry
    serve = config.serve

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if serve.share:
            threading.Thread(target=_open_share_link, args=(serve.port,), daemon=True).start()
        pruning = asyncio.create_task(ctx.exports.prune_forever())
        try:
            yield
        finally:
            pruning.cancel()
            ctx.exports.remove()

    app = FastAPI(
        title="taleforge",
        version=__version__,
        description="Story generation: taleforge's own API under /api, an "
        "OpenAI-compatible API under /v1 (completions, chat completions, models) and the "
        "KoboldAI API under /api/v1 and /api/extra (SillyTavern, KoboldAI Lite).",
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.ctx = ctx

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return exc.response()

    @app.exception_handler(KoboldError)
    async def _kobold_error(request: Request, exc: KoboldError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return invalid_body(exc, body_model(request)).response()

    @app.exception_handler(ConfigError)
    async def _config_error(request: Request, exc: ConfigError) -> Response:
        return _error(400, str(exc), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(("/api", "/v1")):
            unreadable = exc.detail == "There was an error parsing the body"  # FastAPI's words
            message = describe_body_error(exc.__cause__) if unreadable else None
            return _error(exc.status_code, message or str(exc.detail), "invalid_request_error")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    app.include_router(build_router(registry))
    app.include_router(build_kobold_router(registry))  # SillyTavern, KoboldAI Lite
    app.include_router(build_library_router(ctx))
    app.include_router(build_auth_router(ctx))
    add_metrics_route(app, ctx.metrics)
    # Middleware runs outermost-last-added: security headers → Host → Origin → CORS → basic
    # auth (optional) → body limit → session cookie → account. The cookie is Secure whenever
    # the request came over HTTPS (guard.SecurityHeaders), directly or through a trusted proxy.
    app.add_middleware(AccountMiddleware, ctx=ctx)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key(ctx),
        session_cookie=SESSION_COOKIE,
        max_age=serve.session_max_seconds,
        same_site="lax",
    )
    install_limits(app, config)  # body size limit (outside the session), 429 for rate limits
    if serve.auth:
        _add_basic_auth(app, serve.auth)
    guard.install(app, serve)

    ui = build_ui(registry, ctx)
    ui.queue(default_concurrency_limit=None, max_size=None)
    # Gradio copies a handler's file into its cache (a shared temporary folder) unless it is
    # there already: the private export folder is the cache of every block.
    for block in (ui, *ui.blocks.values()):
        block.GRADIO_CACHE = str(ctx.exports.root)

    def gradio_user(request: Request) -> str | None:
        account = request.scope.get("state", {}).get("account")
        return account.username if account is not None else None

    return gr.mount_gradio_app(
        app,
        ui,
        path="/",
        css=CSS,
        js=JS,
        footer_links=["api"],
        auth_dependency=gradio_user,
        allowed_paths=[str(ctx.exports.root)],
    )


def _add_basic_auth(app: FastAPI, credentials: str) -> None:
    user, _, password = credentials.partition(":")
    expected = (user.encode(), password.encode())

    @app.middleware("http")
    async def basic_auth(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path in OPEN_PATHS:
            return await call_next(request)
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                given_user, _, given_password = base64.b64decode(encoded).partition(b":")
            except (binascii.Error, ValueError):
                given_user = given_password = b""
            ok_user = secrets.compare_digest(given_user, expected[0])
            ok_password = secrets.compare_digest(given_password, expected[1])
            if ok_user and ok_password:
                return await call_next(request)
        return JSONResponse(
            {
                "error": {
                    "message": "log in: this server requires a user name and password",
                    "type": "authentication_error",
                    "param": None,
                    "code": None,
                }
            },
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="taleforge"'},
        )


def _open_share_link(port: int) -> None:
    from gradio import networking

    try:
        url = networking.setup_tunnel(
            local_host="127.0.0.1",
            local_port=port,
            share_token=secrets.token_urlsafe(32),
            share_server_address=None,
            share_server_tls_certificate=None,
        )
    except Exception as exc:  # no internet, blocked port, missing frpc binary ...
        log.error(
            "no public share link: %s. The app still runs locally. Alternatives: "
            "`ngrok http %d` or `cloudflared tunnel --url http://127.0.0.1:%d`",
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            port,
            port,
        )
        return
    log.warning("public share link (anyone with it can use this app): %s", url)


def build_server(config: TaleforgeConfig, registry: ModelRegistry | None = None) -> Any:
    """A configured ``uvicorn.Server`` for the app (``server.run()`` serves until stopped).

    Raises:
        ConfigError: A certificate or key file that does not exist.
    """
    import uvicorn

    settings = config.serve
    for name in ("ssl_certfile", "ssl_keyfile"):
        value = getattr(settings, name)
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"--{name.replace('_', '-')} {value}: no such file")
    if settings.host not in LOCAL_HOSTS and not settings.accounts:
        log.warning(
            "listening on %s: accounts are required (writers sign up on /signup); "
            "use HTTPS (--serve.ssl-certfile/--serve.ssl-keyfile) or a TLS proxy in front",
            settings.host,
        )
    if settings.host in guard.ANY_ADDRESS and not settings.allowed_hosts:
        log.warning(
            "listening on every address, but answering only localhost and 127.0.0.1: name "
            "the host writers type with --allowed-host (e.g. --allowed-host 192.168.1.20)"
        )
    return uvicorn.Server(
        uvicorn.Config(
            create_app(config, registry),
            host=settings.host,
            port=settings.port,
            ssl_certfile=settings.ssl_certfile,
            ssl_keyfile=settings.ssl_keyfile,
            log_level="warning",
            timeout_graceful_shutdown=5,
            # X-Forwarded-For/-Proto only from the proxies named (uvicorn would believe any
            # process on 127.0.0.1, which could then dodge the per-address log-in limit).
            proxy_headers=bool(settings.forwarded_allow_ips),
            forwarded_allow_ips=list(settings.forwarded_allow_ips) or None,
        )
    )


def server_url(server: Any, config: TaleforgeConfig) -> str:
    """The URL a started server answers on (the real port when 0 was asked for)."""
    settings = config.serve
    port = settings.port
    if port == 0 and server.servers:
        port = server.servers[0].sockets[0].getsockname()[1]
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"{'https' if settings.ssl_certfile else 'http'}://{host}:{port}"


def serve(config: TaleforgeConfig) -> None:
    """Run the server until interrupted; prints the URL it listens on.

    Raises:
        ModelNotFoundError, ModelLoadError: The default model is missing or corrupt, or the
            remote server (``--backend remote``) cannot be reached.
        ConfigError: The remote server refuses the API key or does not serve the model.
    """
    from taleforge.generate.remote import check_server
    from taleforge.models.loading import load_tokenizer

    # Models load on first use; a default model that is missing or corrupt must stop the
    # server now with the reason, not fail every request later. Only the spec, the
    # config and the tokenizer are read here (no weights).
    model = config.model
    if model.backend == "remote" and model.remote_url:
        check_server(model.remote_url, model.remote_model or model.spec)
    else:
        load_tokenizer(model.spec)
    server = build_server(config)

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            threading.Event().wait(0.05)
        url = server_url(server, config)
        print(f"taleforge is running on {url}  (API docs: {url}/docs; Ctrl+C to stop)", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()
