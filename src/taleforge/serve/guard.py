"""Who may call the server, and what every response tells the browser.

- :class:`HostGuard`: a request naming a Host the server does not serve gets 400 with no data
  (a DNS-rebinding page reaches 127.0.0.1 under its own name; it cannot make the browser send
  an allowed one).
- :class:`OriginGuard`: a request from a page of another origin gets 403 unless that origin
  is in ``serve.cors_origins`` (Starlette's CORS middleware then answers its preflights).
- :class:`SecurityHeaders`: Content-Security-Policy, X-Frame-Options, nosniff and
  Referrer-Policy on every response; under HTTPS (direct, or through a proxy trusted with
  ``serve.forwarded_allow_ips``) HSTS, and ``Secure`` on every cookie.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taleforge.config import ServeConfig

#: The names of this machine: ``localhost`` and every ``*.localhost`` (RFC 6761: browsers
#: resolve them to the loopback address themselves, so no DNS answer can move them).
LOCAL_NAMES = ("localhost", ".localhost")
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
#: Addresses that mean "every interface": not a name a browser uses.
ANY_ADDRESS = ("0.0.0.0", "::", "")
#: The names of Gradio's public share links (``--share``).
SHARE_HOSTS = ".gradio.live"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

#: The studio (Gradio 6) runs inline scripts and styles, compiles the browser-side handlers
#: of events (``js=``) with the AsyncFunction constructor ('unsafe-eval': little more than
#: the 'unsafe-inline' it needs anyway), and loads images and fonts from data: and blob:
#: URLs; everything else comes from this server. Nothing may frame it.
STUDIO_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' data: blob:; "
    "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: FastAPI's /docs and /redoc load Swagger UI and ReDoc from a CDN.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src 'self' https://fonts.gstatic.com; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}
HSTS = "max-age=31536000"


@dataclass(frozen=True)
class AllowedHosts:
    """Host names served exactly, name suffixes (``.example.org``) and address networks."""

    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def allowed_hosts(serve: ServeConfig) -> AllowedHosts:
    """The bound address, the localhost names, the loopback range, ``serve.allowed_hosts``
    and, with ``serve.share``, the share link's names."""
    names: set[str] = set()
    networks = list(LOOPBACK)
    entries = [*LOCAL_NAMES, *serve.allowed_hosts]
    if serve.share:  # the public link's tunnel forwards the link's own name
        entries.append(SHARE_HOSTS)
    if serve.host.lower() not in ANY_ADDRESS:
        entries.append(serve.host.lower())
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError:
            names.add(entry.rstrip("."))
    exact = frozenset(name for name in names if not name.startswith("."))
    return AllowedHosts(exact, tuple(sorted(names - exact)), tuple(networks))


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a Host header (``name``, ``name:port``, ``[v6]:port``); None when
    it is not one."""
    value = value.strip().lower()
    port = ""
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name = value
    if not name or (port and not port.isdigit()) or (value.startswith(":")):
        return None
    return name.rstrip("."), int(port) if port else None


def host_allowed(host_header: str, allowed: AllowedHosts) -> bool:
    """Whether a request with this ``Host`` header is for this server."""
    parsed = split_host(host_header)
    if parsed is None:
        return False
    name = parsed[0]
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name in allowed.names or any(
            name.endswith(suffix) or name == suffix[1:] for suffix in allowed.suffixes
        )
    return any(address in network for network in allowed.networks)


def _origin_parts(origin: str) -> tuple[str, int | None] | None:
    scheme, separator, rest = origin.partition("://")
    parsed = split_host(rest) if separator and "/" not in rest else None
    if parsed is None:
        return None
    return parsed[0], parsed[1] or _DEFAULT_PORTS.get(scheme)


def same_origin(origin: str, host_header: str) -> bool:
    """Whether a page at ``origin`` sent a request to the server it came from."""
    source = _origin_parts(origin.lower())
    target = split_host(host_header)
    if source is None or target is None:
        return False
    scheme = origin.lower().partition("://")[0]
    return source == (target[0], target[1] or _DEFAULT_PORTS.get(scheme))


class HostGuard:
    """Answers 400, with nothing from the server, to a Host header it does not serve."""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host", "")
            if not host_allowed(host, self.allowed):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                refusal = PlainTextResponse(
                    "This server does not answer to that Host name. To serve it under a name "
                    "of your own, start it with --allowed-host NAME (serve.allowed_hosts).",
                    status_code=400,
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class OriginGuard:
    """Answers 403 to a request a page of another origin sent, unless that origin is allowed."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.origins = frozenset(origins)

    def allowed(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:  # not sent by a page's script or form: nothing to check
            return True
        return origin.lower() in self.origins or same_origin(origin, headers.get("host", ""))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.allowed(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            refusal = JSONResponse(
                {
                    "error": {
                        "message": "cross-origin request refused: this server answers pages "
                        "of other sites only when their origin is listed with --cors-origin "
                        "(serve.cors_origins)",
                        "type": "permission_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=403,
            )
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds the security headers to every response; Secure cookies and HSTS under HTTPS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        policy = DOCS_CSP if scope.get("path", "") in DOCS_PATHS else STUDIO_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("content-security-policy", policy)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                if https:
                    headers.setdefault("strict-transport-security", HSTS)
                    _secure_cookies(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _secure_cookies(headers: MutableHeaders) -> None:
    cookies = headers.getlist("set-cookie")
    if not cookies:
        return
    del headers["set-cookie"]
    for cookie in cookies:
        secure = any(p.strip().lower() == "secure" for p in cookie.split(";"))
        headers.append("set-cookie", cookie if secure else f"{cookie}; Secure")


def install(app: Any, serve: ServeConfig) -> None:
    """Add the guards as the outermost middleware of ``app`` (call after all other middleware).

    Starlette's CORS middleware is always added, even with no allowed origin: Gradio leaves
    CORS to an app that configures it, instead of answering any ``http://localhost:*`` page.
    """
    from starlette.middleware.cors import CORSMiddleware

    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(serve.cors_origins),
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["authorization", "content-type", "x-csrf-token"],
    )
    app.add_middleware(OriginGuard, origins=serve.cors_origins)
    app.add_middleware(HostGuard, allowed=allowed_hosts(serve))
    app.add_middleware(SecurityHeaders)
