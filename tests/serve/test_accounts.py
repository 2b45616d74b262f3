"""Accounts over real HTTP, on SQLite and on a real PostgreSQL: log-in, sessions, CSRF, API
tokens, and the privacy of every writer's stories through every API route."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.parametrize("module_database", ["sqlite", "postgresql"], indirect=True)

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(module_database: str, tiny_model_dir, start_server) -> Any:
    overrides = {
        "model.spec": str(tiny_model_dir),
        "serve.accounts": True,
        "serve.database_url": module_database,
        "serve.rate_limit_login": "1000/minute",
    }
    with start_server(overrides) as url:
        yield url


def form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


class Writer:
    """A browser-like client: cookies, forms with their CSRF token, JSON with the header."""

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self.http = httpx.Client(base_url=url, timeout=60)

    def sign_up(self, password: str = PASSWORD) -> httpx.Response:
        token = form_token(self.http.get("/signup").text)
        return self.http.post(
            "/signup",
            data={
                "username": self.name,
                "password": password,
                "password2": password,
                "csrf_token": token,
            },
        )

    def log_in(self, password: str = PASSWORD) -> httpx.Response:
        token = form_token(self.http.get("/login").text)
        return self.http.post(
            "/login", data={"username": self.name, "password": password, "csrf_token": token}
        )

    def csrf(self) -> str:
        return str(self.http.get("/api/me").json()["csrf_token"])

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"x-csrf-token": self.csrf()}
        return self.http.request(method, path, headers=headers, **kwargs)


_counter = iter(range(10**6))


@pytest.fixture
def writer(server: str):
    """A new signed-up writer with a unique name."""

    def make() -> Writer:
        person = Writer(server, f"writer{next(_counter)}x{id(server) % 997}")
        response = person.sign_up()
        assert response.status_code == 303, response.text
        return person

    return make


def test_the_studio_and_the_api_need_a_log_in(server):
    anonymous = httpx.Client(base_url=server)
    page = anonymous.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
    for method, path in [
        ("GET", "/api/stories"),
        ("GET", "/v1/models"),
        ("POST", "/api/generate"),
        ("POST", "/gradio_api/queue/join"),
        ("POST", "/account/tokens"),
    ]:
        response = anonymous.request(method, path)
        assert response.status_code == 401, (method, path, response.status_code)
    for page_path in ("/config", "/account", "/gradio_api/info"):
        response = anonymous.get(page_path, follow_redirects=False)
        assert response.status_code == 303, page_path
        assert response.headers["location"].startswith("/login?next=")
    assert "log in" in anonymous.get("/api/stories").json()["error"]["message"]
    assert anonymous.get("/health").status_code == 200
    assert "Log in" in anonymous.get("/login").text


def test_sign_up_log_out_and_log_in_again(server, writer):
    ada = writer()
    assert ada.http.get("/api/me").json()["username"] == ada.name
    assert ada.http.get("/", follow_redirects=False).status_code == 200
    assert ada.http.post("/logout", data={"csrf_token": ada.csrf()}).status_code == 303
    assert ada.http.get("/api/me").status_code == 401
    wrong = ada.log_in("not the password")
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    right = ada.log_in()
    assert right.status_code == 303 and right.headers["location"] == "/"
    assert ada.http.get("/api/me").json()["username"] == ada.name


def test_the_session_cookie_is_signed_httponly_and_samesite(server):
    eve = Writer(server, f"eve{next(_counter)}")
    cookie = eve.sign_up().headers["set-cookie"]
    assert cookie.startswith("taleforge_session=")
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "path=/" in cookie.lower() and "domain=" not in cookie.lower()  # host-only
    value = eve.http.cookies["taleforge_session"]
    forged = httpx.Client(base_url=server, cookies={"taleforge_session": value[:-4] + "AAAA"})
    assert forged.get("/api/me").status_code == 401


def test_state_changing_posts_without_the_csrf_token_are_refused(server, writer):
    ada = writer()
    assert ada.http.post("/logout", data={}).status_code == 403
    assert ada.http.post("/logout", data={"csrf_token": "guess"}).status_code == 403
    assert ada.http.get("/api/me").status_code == 200  # still logged in
    stranger = httpx.Client(base_url=server)
    refused = stranger.post("/login", data={"username": ada.name, "password": PASSWORD})
    assert refused.status_code == 403 and "expired" in refused.text
    no_header = ada.http.post("/api/stories", json={"text": "x"})
    assert no_header.status_code == 403
    assert "X-CSRF-Token" in no_header.json()["error"]["message"]
    assert ada.api("POST", "/api/stories", json={"text": "x"}).status_code == 201


def test_no_writer_reaches_another_writers_story_through_any_api_route(server, writer):
    ada, bob = writer(), writer()
    story = ada.api("POST", "/api/stories", json={"text": "Ada's secret.", "title": "Mine"}).json()
    sid = story["id"]
    bob_token = bob.api("POST", "/api/tokens", json={"name": "script"}).json()["token"]
    bob_script = httpx.Client(base_url=server, headers={"authorization": f"Bearer {bob_token}"})
    routes = [
        ("GET", f"/api/stories/{sid}", None),
        ("PATCH", f"/api/stories/{sid}", {"text": "defaced", "title": "stolen"}),
        ("DELETE", f"/api/stories/{sid}", None),
        ("POST", f"/api/stories/{sid}/undelete", None),
        ("GET", f"/api/stories/{sid}/versions", None),
        ("POST", f"/api/stories/{sid}/versions/1/restore", None),
        ("POST", f"/api/stories/{sid}/rating", {"score": 1}),
        ("GET", f"/api/stories/{sid}/export?format=txt", None),
        ("GET", f"/api/stories/{sid}/export?format=epub", None),
        ("GET", f"/api/stories/{sid}/export?version=1", None),
        ("POST", f"/api/stories/{sid}/versions/1/checkout", None),
        ("PATCH", f"/api/stories/{sid}", {"text": "a branch", "parent": 1}),
        ("GET", f"/api/stories/{sid}/lorebook", None),
        ("PUT", f"/api/stories/{sid}/lorebook", {"entries": []}),
    ]
    missing = bob.api("GET", "/api/stories/987654321").json()["error"]["message"]
    for method, path, body in routes:
        for client in ("session", "token"):
            if client == "session":
                response = bob.api(method, path, json=body)
            else:
                response = bob_script.request(method, path, json=body)
            assert response.status_code == 404, (client, method, path, response.text)
            message = response.json()["error"]["message"]
            assert "secret" not in response.text and "Mine" not in response.text
            if "versions/1" not in path and "undelete" not in path:
                # the same answer as for a story that does not exist: ids cannot be probed
                assert message == missing.replace("987654321", str(sid))
    assert bob.http.get("/api/stories", params={"q": "secret"}).json()["stories"] == []
    # the token of one writer never acts as another
    assert bob_script.get("/api/me").json()["username"] == bob.name
    mine = ada.http.get(f"/api/stories/{sid}").json()
    assert (mine["title"], mine["text"], mine["versions"], mine["rating"]) == (
        "Mine",
        "Ada's secret.",
        1,
        None,
    )


def test_the_library_over_http(server, writer):
    ada = writer()
    made = ada.api(
        "POST", "/api/stories", json={"text": "One.", "prompt": "a count", "genre": "fantasy"}
    )
    assert made.status_code == 201
    sid = made.json()["id"]
    ada.api("PATCH", f"/api/stories/{sid}", json={"text": "One. Two.", "kind": "autosave"})
    renamed = ada.api("PATCH", f"/api/stories/{sid}", json={"title": "Counting"}).json()
    assert renamed["title"] == "Counting" and renamed["text"] == "One. Two."
    listed = ada.http.get("/api/stories", params={"q": "two", "genre": "fantasy"}).json()
    assert [s["id"] for s in listed["stories"]] == [sid]
    versions = ada.http.get(f"/api/stories/{sid}/versions").json()["versions"]
    assert [v["text"] for v in versions] == ["One.", "One. Two.", "One. Two."]
    restored = ada.api("POST", f"/api/stories/{sid}/versions/1/restore").json()
    assert (restored["text"], restored["title"]) == ("One.", "a count")  # as version 1 was
    ada.api("PATCH", f"/api/stories/{sid}", json={"title": "Counting"})
    md = ada.http.get(f"/api/stories/{sid}/export", params={"format": "md"})
    assert md.headers["content-disposition"] == 'attachment; filename="counting.md"'
    assert md.text.startswith("# Counting")
    epub = ada.http.get(f"/api/stories/{sid}/export", params={"format": "epub"})
    assert epub.headers["content-type"] == "application/epub+zip" and epub.content[:2] == b"PK"
    assert ada.api("POST", f"/api/stories/{sid}/rating", json={"score": 4}).json()["rating"] == 4
    bad = ada.api("POST", f"/api/stories/{sid}/rating", json={"score": 9})
    assert bad.status_code == 422 and "score" in bad.text
    gone = ada.api("DELETE", f"/api/stories/{sid}").json()
    assert gone["deleted"] and gone["undo_until"]
    assert ada.http.get(f"/api/stories/{sid}").status_code == 404
    assert ada.api("POST", f"/api/stories/{sid}/undelete").json()["title"] == "Counting"
    huge = ada.http.get(f"/api/stories/{10**30}")
    assert huge.status_code in (404, 422)


def test_api_tokens_work_with_the_openai_client_until_revoked(server, writer):
    from openai import AuthenticationError, OpenAI

    ada = writer()
    made = ada.api("POST", "/api/tokens", json={"name": "notebook"}).json()
    client = OpenAI(base_url=f"{server}/v1", api_key=made["token"], max_retries=0)
    assert client.models.list().data
    (listed,) = ada.http.get("/api/tokens").json()["tokens"]
    assert listed["name"] == "notebook" and made["token"].startswith(listed["prefix"])
    assert ada.api("DELETE", f"/api/tokens/{listed['id']}").json()["revoked"]
    with pytest.raises(AuthenticationError, match="not valid"):
        client.models.list()


def test_a_password_change_logs_out_the_other_sessions(server, writer):
    ada = writer()
    laptop = Writer(server, ada.name)
    assert laptop.log_in().status_code == 303
    page = ada.http.get("/account")
    changed = ada.http.post(
        "/account/password",
        data={
            "current": PASSWORD,
            "new": "a brand new password",
            "new2": "a brand new password",
            "csrf_token": form_token(page.text),
        },
    )
    assert changed.status_code == 303
    assert "Password changed" in ada.http.get("/account").text
    assert ada.http.get("/api/me").status_code == 200  # this session stays
    assert laptop.http.get("/api/me").status_code == 401  # the other is logged out
    assert laptop.log_in("a brand new password").status_code == 303


def change_password(person: Writer, new: str = "a brand new password") -> httpx.Response:
    page = person.http.get("/account")
    return person.http.post(
        "/account/password",
        data={"current": PASSWORD, "new": new, "new2": new, "csrf_token": form_token(page.text)},
    )


def test_a_cookie_replayed_after_logout_is_refused(server, writer):
    ada = writer()
    stolen = ada.http.cookies["taleforge_session"]
    assert ada.http.post("/logout", data={"csrf_token": ada.csrf()}).status_code == 303
    replayed = httpx.get(f"{server}/api/me", cookies={"taleforge_session": stolen})
    assert replayed.status_code == 401
    assert "log in" in replayed.json()["error"]["message"]


def test_log_in_starts_a_new_session(server, writer):
    """A cookie planted before log-in (session fixation) never becomes a logged-in one."""
    ada = writer()
    ada.http.post("/logout", data={"csrf_token": ada.csrf()})
    ada.http.get("/login")
    planted = ada.http.cookies["taleforge_session"]
    assert ada.log_in().status_code == 303
    assert ada.http.cookies["taleforge_session"] != planted
    assert ada.http.get("/api/me").status_code == 200
    replayed = httpx.get(f"{server}/api/me", cookies={"taleforge_session": planted})
    assert replayed.status_code == 401


def test_log_out_everywhere_ends_every_session_of_the_writer(server, writer):
    ada, bob = writer(), writer()
    laptop = Writer(server, ada.name)
    assert laptop.log_in().status_code == 303
    page = ada.http.get("/account")
    assert "Log out everywhere" in page.text
    ended = ada.http.post("/logout/everywhere", data={"csrf_token": form_token(page.text)})
    assert ended.status_code == 303 and ended.headers["location"] == "/login"
    assert ada.http.get("/api/me").status_code == 401
    assert laptop.http.get("/api/me").status_code == 401
    assert bob.http.get("/api/me").json()["username"] == bob.name  # other writers stay


def test_deleting_the_account_ends_its_sessions_and_tokens(server, writer):
    ada, bob = writer(), writer()
    laptop = Writer(server, ada.name)
    assert laptop.log_in().status_code == 303
    token = ada.api("POST", "/api/tokens", json={"name": "script"}).json()["token"]
    sid = ada.api("POST", "/api/stories", json={"title": "Mine", "text": "words"}).json()["id"]
    stolen = ada.http.cookies["taleforge_session"]
    csrf = form_token(ada.http.get("/account").text)
    wrong = ada.http.post("/account/delete", data={"password": "not it", "csrf_token": csrf})
    assert wrong.status_code == 400 and "password is wrong" in wrong.text
    gone = ada.http.post("/account/delete", data={"password": PASSWORD, "csrf_token": csrf})
    assert gone.status_code == 303 and gone.headers["location"] == "/login"
    assert httpx.get(f"{server}/api/me", cookies={"taleforge_session": stolen}).status_code == 401
    assert laptop.http.get("/api/me").status_code == 401
    bearer = {"authorization": f"Bearer {token}"}
    assert httpx.get(f"{server}/api/me", headers=bearer).status_code == 401
    assert ada.log_in().status_code == 401
    assert bob.http.get(f"/api/stories/{sid}").status_code == 404
    assert bob.http.get("/api/me").json()["username"] == bob.name


def test_a_password_change_ends_the_api_tokens(server, writer):
    ada = writer()
    token = ada.api("POST", "/api/tokens", json={"name": "script"}).json()["token"]
    bearer = {"authorization": f"Bearer {token}"}
    assert httpx.get(f"{server}/api/me", headers=bearer).status_code == 200
    assert change_password(ada).status_code == 303
    refused = httpx.get(f"{server}/api/me", headers=bearer)
    assert refused.status_code == 401
    assert "not valid" in refused.json()["error"]["message"]
    assert ada.http.get("/api/tokens").json()["tokens"] == []


def test_an_idle_or_old_session_is_refused(server, writer, module_database):
    """Sessions past the idle or the absolute lifetime (serve.session_idle_seconds,
    serve.session_max_seconds, read from the server's config) end: aged in the database."""
    from datetime import timedelta

    from sqlalchemy import update

    from taleforge.config import ServeConfig
    from taleforge.store import Database
    from taleforge.store.models import LoginSession, User, now

    defaults = ServeConfig()
    db = Database(module_database)
    try:
        for column, lifetime in [
            (LoginSession.last_seen_at, defaults.session_idle_seconds),
            (LoginSession.created_at, defaults.session_max_seconds),
        ]:
            ada = writer()
            assert ada.http.get("/api/me").status_code == 200
            with db.session() as session:
                user_id = session.scalar(User.__table__.select().with_only_columns(User.id)
                                         .where(User.username == ada.name))  # fmt: skip
                session.execute(
                    update(LoginSession)
                    .where(LoginSession.user_id == user_id)
                    .values({column: now() - timedelta(seconds=lifetime + 5)})
                )
            assert ada.http.get("/api/me").status_code == 401, column
    finally:
        db.dispose()


def test_the_account_page_makes_tokens_and_escapes_their_names(server, writer):
    ada = writer()
    page = ada.http.get("/account")
    made = ada.http.post(
        "/account/tokens",
        data={"name": "<script>alert(1)</script>", "csrf_token": form_token(page.text)},
        follow_redirects=True,
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in made.text
    assert "<script>alert(1)</script>" not in made.text
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token and token.group(1).startswith("tf_")
    assert "tf_" not in ada.http.get("/account").text.split("new-token")[0][-10:]


def test_log_in_redirects_only_to_local_pages(server, writer):
    ada = writer()
    ada.http.post("/logout", data={"csrf_token": ada.csrf()})
    token = form_token(ada.http.get("/login").text)
    evil = ada.http.post(
        "/login",
        data={
            "username": ada.name,
            "password": PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/steal",
        },
    )
    assert evil.status_code == 303 and evil.headers["location"] == "/"


@pytest.fixture(scope="module")
def strict_server(module_database: str, tiny_model_dir, start_server) -> Any:
    overrides = {
        "model.spec": str(tiny_model_dir),
        "serve.accounts": True,
        "serve.database_url": module_database,
        "serve.rate_limit_login": "4/minute",
    }
    with start_server(overrides) as url:
        yield url


def test_wrong_passwords_are_rate_limited(strict_server):
    ada = Writer(strict_server, "ada")
    assert ada.sign_up().status_code == 303  # attempt 1 (sign-ups count too)
    ada.http.post("/logout", data={"csrf_token": ada.csrf()})
    guesses = [ada.log_in(f"guess number {n}").status_code for n in range(3)]
    assert guesses == [401, 401, 401]
    blocked = ada.log_in()  # the right password, but too many attempts
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert "Too many" in blocked.text or "too many" in blocked.text
    assert ada.http.get("/api/me").status_code == 401
    # another user name from the same address is limited too (per IP)
    bob = Writer(strict_server, "bob")
    assert bob.log_in().status_code == 429
