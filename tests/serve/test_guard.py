"""Who may call the server, over real HTTP: the Host allow-list, cross-origin requests, the
security headers on every response, and which proxies may say who the client is."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from taleforge.config import load_config

PASSWORD = "correct horse battery"
FOREIGN_HOSTS = ["attacker.example:7873", "attacker.example", "192.168.1.50", "[::2]:80"]


@pytest.fixture(scope="module")
def anonymous_server(tiny_model_dir, tmp_path_factory, start_server) -> Any:
    database = tmp_path_factory.mktemp("guard") / "taleforge.db"
    overrides = {"model.spec": str(tiny_model_dir), "serve.database_url": f"sqlite:///{database}"}
    with start_server(overrides) as url:
        yield url


@pytest.fixture(scope="module")
def accounts_server(tiny_model_dir, tmp_path_factory, start_server) -> Any:
    database = tmp_path_factory.mktemp("guard-accounts") / "taleforge.db"
    overrides = {
        "model.spec": str(tiny_model_dir),
        "serve.database_url": f"sqlite:///{database}",
        "serve.accounts": True,
        "serve.rate_limit_login": "1000/minute",
    }
    with start_server(overrides) as url:
        yield url


def signed_up(url: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    page = client.get("/signup").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    made = client.post(
        "/signup",
        data={"username": name, "password": PASSWORD, "password2": PASSWORD,
              "csrf_token": token.group(1)},
    )  # fmt: skip
    assert made.status_code == 303, made.text
    return client


# -- Host ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["anonymous", "accounts"])
def test_a_foreign_host_header_gets_no_data_on_any_route(mode, anonymous_server, accounts_server):
    url = anonymous_server if mode == "anonymous" else accounts_server
    http = httpx.Client(base_url=url, timeout=30)
    saved = http.post("/api/stories", json={"title": "Private diary", "text": "secret words"})
    if mode == "anonymous":
        assert saved.status_code == 201, saved.text
    for host in FOREIGN_HOSTS:
        for method, path in [
            ("GET", "/"),
            ("GET", "/api/stories"),
            ("DELETE", "/api/stories/1"),
            ("GET", "/v1/models"),
            ("GET", "/health"),
            ("GET", "/login"),
            ("GET", "/gradio_api/info"),
            ("GET", "/docs"),
        ]:
            refused = http.request(method, path, headers={"host": host})
            assert refused.status_code in (400, 421), (host, path, refused.status_code)
            assert "Private diary" not in refused.text and "secret" not in refused.text
            assert len(refused.content) < 300, refused.text
            assert "--allowed-host" in refused.text  # says what to change
            assert "set-cookie" not in refused.headers
    assert http.get("/health").status_code == 200  # 127.0.0.1:port, the bound address


def test_localhost_names_and_the_loopback_range_are_allowed(anonymous_server):
    port = anonymous_server.rsplit(":", 1)[1]
    for host in [f"localhost:{port}", "localhost", f"127.0.0.5:{port}", f"[::1]:{port}"]:
        response = httpx.get(f"{anonymous_server}/health", headers={"host": host})
        assert response.status_code == 200, host


def test_an_allowed_host_serves_a_real_domain(tiny_model_dir, tmp_path, start_server):
    overrides = {
        "model.spec": str(tiny_model_dir),
        "serve.database_url": f"sqlite:///{tmp_path / 'taleforge.db'}",
        "serve.allowed_hosts": ["stories.example.org", ".lan.example"],
    }
    with start_server(overrides) as url:
        for host, status in [
            ("stories.example.org", 200),
            ("stories.example.org:443", 200),
            ("pc1.lan.example", 200),
            ("lan.example", 200),
            ("evil-stories.example.org", 400),
            ("stories.example.org.evil", 400),
        ]:
            assert httpx.get(f"{url}/api/stories", headers={"host": host}).status_code == status


def test_the_default_allow_list_is_the_bound_address_and_loopback():
    from taleforge.serve.guard import allowed_hosts, host_allowed

    def config(**serve: Any) -> Any:
        return load_config(None, {f"serve.{k}": v for k, v in serve.items()}).serve

    local = allowed_hosts(config())
    assert host_allowed("127.0.0.1:7860", local) and host_allowed("127.9.9.9", local)
    assert host_allowed("localhost", local) and host_allowed("LOCALHOST.:7860", local)
    assert not host_allowed("10.0.0.2", local) and not host_allowed("", local)
    assert not host_allowed("localhost.attacker.example", local)
    lan = allowed_hosts(config(host="192.168.1.5", accounts=True))
    assert host_allowed("192.168.1.5:7860", lan) and not host_allowed("192.168.1.6", lan)
    everywhere = allowed_hosts(config(host="0.0.0.0", accounts=True))
    assert not host_allowed("192.168.1.5", everywhere)
    assert not host_allowed("abc123.gradio.live", local)
    assert host_allowed("abc123.gradio.live", allowed_hosts(config(share=True)))


@pytest.mark.parametrize(
    "value", ["http://example.org", "example.org/path", "exa mple.org", "*.example.org", ""]
)
def test_a_malformed_allowed_host_is_refused_with_a_clear_message(value):
    from taleforge.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed_hosts: .* is not a host name: give the name"):
        load_config(None, {"serve.allowed_hosts": [value]})


# -- cross-origin requests ------------------------------------------------------------------


def test_a_cross_origin_credentialed_request_is_refused(anonymous_server, accounts_server):
    writer = signed_up(accounts_server, "crossorigin")
    for url, http in [(anonymous_server, httpx.Client(base_url=anonymous_server)),
                      (accounts_server, writer)]:  # fmt: skip
        for origin in ["http://localhost:9999", "http://127.0.0.1:1", "http://attacker.example",
                       "null"]:  # fmt: skip
            headers = {"origin": origin}
            simple = http.get("/api/stories", headers=headers)
            assert simple.status_code == 403, (origin, simple.status_code)
            assert "access-control-allow-origin" not in simple.headers
            assert "access-control-allow-credentials" not in simple.headers
            assert "stories" not in simple.text
            assert "cross-origin" in simple.json()["error"]["message"]
            preflight = http.options(
                "/api/stories/1",
                headers={**headers, "access-control-request-method": "DELETE"},
            )
            assert preflight.status_code >= 400
            assert "access-control-allow-origin" not in preflight.headers
        # the studio's own origin is the same origin: served
        assert http.get("/api/stories", headers={"origin": url}).status_code == 200


def test_an_allowed_origin_gets_cors_with_credentials(tiny_model_dir, tmp_path, start_server):
    overrides = {
        "model.spec": str(tiny_model_dir),
        "serve.database_url": f"sqlite:///{tmp_path / 'taleforge.db'}",
        "serve.cors_origins": ["https://editor.example.org"],
    }
    with start_server(overrides) as url:
        origin = {"origin": "https://editor.example.org"}
        simple = httpx.get(f"{url}/api/stories", headers=origin)
        assert simple.status_code == 200
        assert simple.headers["access-control-allow-origin"] == "https://editor.example.org"
        assert simple.headers["access-control-allow-credentials"] == "true"
        preflight = httpx.options(
            f"{url}/api/stories",
            headers={**origin, "access-control-request-method": "POST",
                     "access-control-request-headers": "content-type, x-csrf-token"},
        )  # fmt: skip
        assert preflight.status_code == 200
        other = httpx.get(f"{url}/api/stories", headers={"origin": "https://other.example.org"})
        assert other.status_code == 403


# -- security headers ------------------------------------------------------------------------

HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def check_headers(response: httpx.Response) -> None:
    if response.content:
        assert response.headers["content-type"], response.url
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (response.url, name, response.headers)
    policy = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy, (response.url, policy)
    assert "default-src 'self'" in policy and "object-src 'none'" in policy


def test_security_headers_on_every_response(anonymous_server, accounts_server):
    anonymous = httpx.Client(base_url=anonymous_server, timeout=60)
    writer = signed_up(accounts_server, "headers")
    responses = [
        anonymous.get("/"),
        anonymous.get("/api/stories"),
        anonymous.get("/v1/models"),
        anonymous.get("/health"),
        anonymous.get("/docs"),
        anonymous.get("/api/no-such-route"),
        anonymous.post("/v1/completions", content=b"{not json"),
        anonymous.get("/gradio_api/info"),
        anonymous.get("/", headers={"host": "attacker.example"}),
        writer.get("/"),
        writer.get("/account"),
        writer.get("/api/me"),
        httpx.get(f"{accounts_server}/login"),
        httpx.get(f"{accounts_server}/api/stories"),  # 401
        httpx.get(f"{accounts_server}/account", follow_redirects=False),  # 303
    ]
    for response in responses:
        check_headers(response)
    assert not any("strict-transport-security" in r.headers for r in responses)  # plain HTTP


# -- proxies ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_login_server(tiny_model_dir, tmp_path_factory, start_server) -> Any:
    database = tmp_path_factory.mktemp("guard-proxy") / "taleforge.db"
    overrides = {
        "model.spec": str(tiny_model_dir),
        "serve.database_url": f"sqlite:///{database}",
        "serve.accounts": True,
        "serve.rate_limit_login": "3/minute",
    }
    with start_server(overrides) as url:
        yield url


def attempt_login(url: str, name: str, headers: dict[str, str]) -> httpx.Response:
    client = httpx.Client(base_url=url, timeout=30, headers=headers)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    return client.post(
        "/login", data={"username": name, "password": "wrong guess", "csrf_token": token.group(1)}
    )


def test_a_forged_forwarded_for_does_not_change_the_limited_address(strict_login_server):
    statuses = [
        attempt_login(
            strict_login_server,
            f"user{n}",
            {"x-forwarded-for": f"203.0.113.{n}", "x-forwarded-proto": "https"},
        ).status_code
        for n in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]  # one address: 127.0.0.1


def test_a_trusted_proxy_sets_the_address_and_secure_cookies(
    tiny_model_dir, tmp_path, start_server
):
    overrides = {
        "model.spec": str(tiny_model_dir),
        "serve.database_url": f"sqlite:///{tmp_path / 'taleforge.db'}",
        "serve.accounts": True,
        "serve.rate_limit_login": "3/minute",
        "serve.forwarded_allow_ips": ["127.0.0.1"],
    }
    with start_server(overrides) as url:
        statuses = [
            attempt_login(url, "someone", {"x-forwarded-for": f"203.0.113.{n}"}).status_code
            for n in range(3)
        ]
        assert statuses == [401, 401, 401]  # three addresses, each under its limit
        page = httpx.get(f"{url}/login", headers={"x-forwarded-proto": "https"})
        cookie = page.headers["set-cookie"].lower()
        assert "; secure" in cookie and "httponly" in cookie
        assert page.headers["strict-transport-security"].startswith("max-age=")
        plain = httpx.get(f"{url}/login")
        assert "secure" not in plain.headers["set-cookie"].lower()
