"""In a real Chromium: script in prompts, titles and stories is shown as text and never runs,
and one writer's studio never shows, changes or deletes another writer's story."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

#: Each sets window.__xss (or opens a dialog) if the browser ever runs it.
PAYLOADS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    '<svg onload="window.__xss=3"></svg>',
    '"><iframe srcdoc="<script>parent.__xss=4</script>"></iframe>',
    '<a href="javascript:window.__xss=5">click</a>',
    "<details open ontoggle=\"alert('xss')\">",
]
TITLE = PAYLOADS[0] + " & <b>bold</b>"
TEXT = "\n\n".join(f"Paragraph {n}: {p}" for n, p in enumerate(PAYLOADS))


def watch(page: Any) -> list[str]:
    """Arm the page: window.__xss starts at 0; dialogs are recorded and dismissed."""
    dialogs: list[str] = []
    page.add_init_script("window.__xss = 0")

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


def wait_text(page: Any, selector: str, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = page.inner_text(selector)
        if needle in text:
            return str(text)
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared in {selector}: {text!r}")


def open_library(page: Any) -> None:
    page.click("button[role=tab]:has-text('Library')")
    page.click("#library-search-btn")


def test_script_in_titles_stories_prompts_and_chat_never_runs(tiny_studio, launch_chromium):
    saved = httpx.post(f"{tiny_studio}/api/stories", json={"title": TITLE, "text": TEXT})
    assert saved.status_code == 201
    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(60_000)
        dialogs = watch(page)
        page.goto(tiny_studio)
        page.wait_for_selector("#prompt textarea")

        # a prompt full of markup, continued by the model: the story box and the autosave
        # line (which names the title, the prompt's first line) show it as text
        page.fill("#prompt textarea", PAYLOADS[0] + " " + PAYLOADS[1])
        page.fill("#title textarea, #title input", "")
        page.click("#write-btn")
        wait_text(page, "#save-status", "autosaved")
        assert PAYLOADS[0] in page.inner_text("#save-status")

        # the library lists the saved story's title as text; opening it fills the editor
        open_library(page)
        wait_text(page, "#library-table", "bold</b>")
        page.fill("#library-id input", str(saved.json()["id"]))
        page.click("#open-btn")
        wait_text(page, "#save-status", "opened")
        assert TITLE in page.inner_text("#save-status")
        assert page.input_value("#story textarea") == TEXT

        # the chat shows a message full of markup without running it (the tiny model has
        # no chat template, so the reply is an error; the writer's message is shown first)
        page.click("button[role=tab]:has-text('Chat')")
        page.fill("#chat-input textarea", "\n".join(PAYLOADS))
        page.click("#send-btn")
        wait_text(page, "#chatbot", "click")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "xss-chat.png"), full_page=True)

        page.click("button[role=tab]:has-text('Write')")
        page.screenshot(path=str(ARTIFACTS / "xss-write.png"), full_page=True)
        assert page.evaluate("window.__xss") == 0
        assert dialogs == []
        assert page.locator("iframe").count() == 0


#: Collects every Content-Security-Policy violation the page reports.
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""


def test_the_studio_works_under_its_csp_and_exports_files_owner_only(tiny_studio, launch_chromium):
    import os
    import stat
    from urllib.parse import unquote

    old_umask = os.umask(0)  # the server runs in this process: owner-only whatever the umask
    try:
        with launch_chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(60_000)
            page.add_init_script(CSP_WATCH)
            refused: list[str] = []
            page.on(
                "console",
                lambda message: (
                    refused.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            first = page.goto(tiny_studio)
            assert first is not None
            assert "frame-ancestors 'none'" in first.headers["content-security-policy"]
            page.wait_for_selector("#prompt textarea")

            page.fill("#prompt textarea", "The lantern maker's last lantern")
            page.click("#write-btn")
            wait_text(page, "#save-status", "autosaved")
            page.click("#export-btn")
            link = page.locator("#export [data-testid=download-link]")
            link.first.wait_for()
            href = str(link.first.get_attribute("href"))
            exported = Path(unquote(href.split("file=", 1)[1]))
            assert exported.is_file() and exported.read_text().strip()
            assert stat.S_IMODE(exported.stat().st_mode) == 0o600, oct(exported.stat().st_mode)
            assert stat.S_IMODE(exported.parent.stat().st_mode) == 0o700
            downloaded = httpx.get(href if href.startswith("http") else tiny_studio + href)
            assert downloaded.status_code == 200 and downloaded.text == exported.read_text()

            open_library(page)
            wait_text(page, "#library-table", "lantern")
            page.click("button[role=tab]:has-text('Chat')")
            page.click("button[role=tab]:has-text('Write')")
            page.wait_for_timeout(1000)
            assert page.evaluate("window.__csp") == []
            assert refused == []
    finally:
        os.umask(old_umask)


@pytest.mark.parametrize("module_database", ["sqlite", "postgresql"], indirect=True)
def test_a_writer_never_sees_or_changes_another_writers_story_in_the_studio(
    tiny_model_dir, start_server, launch_chromium, module_database
):
    overrides = {
        "model.spec": str(tiny_model_dir),
        "serve.accounts": True,
        "serve.database_url": module_database,
    }
    with start_server(overrides) as url:
        ada = httpx.Client(base_url=url)
        token = re.search(r'name="csrf_token" value="([^"]+)"', ada.get("/signup").text)
        assert token
        form = {"username": "ada", "password": "ada's password", "password2": "ada's password"}
        ada.post("/signup", data={**form, "csrf_token": token.group(1)})
        csrf = ada.get("/api/me").json()["csrf_token"]
        secret = ada.post(
            "/api/stories",
            json={"title": "Ada's diary", "text": "Only Ada may read this."},
            headers={"x-csrf-token": csrf},
        ).json()

        with launch_chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(url)  # → the log-in page
            page.wait_for_selector("#login-btn")
            page.click("text=Sign up")
            page.fill("#username", "bob")
            page.fill("#password", "bob's password")
            page.fill("#password2", "bob's password")
            page.click("#signup-btn")
            page.wait_for_selector("#prompt textarea")
            wait_text(page, "#account-bar", "signed in as bob")

            open_library(page)
            page.wait_for_timeout(1500)
            assert "Ada's diary" not in page.inner_text("#library-table")
            page.fill("#library-id input", str(secret["id"]))
            for button in ("#open-btn", "#delete-btn", "#rate-btn"):
                if button == "#rate-btn":
                    page.click("text=Rename, export, rate, versions")
                page.click(button)
                page.wait_for_selector(f"text=no story {secret['id']} in your library")
                page.screenshot(path=str(ARTIFACTS / f"other-writer{button[1:]}.png"))
                page.keyboard.press("Escape")
                page.wait_for_timeout(500)
            page.fill("#rename-title textarea, #rename-title input", "Bob was here")
            page.click("#rename-btn")
            page.wait_for_selector(f"text=no story {secret['id']} in your library")
            assert page.input_value("#story textarea") == ""
            assert "Only Ada" not in page.content()

        mine = ada.get(f"/api/stories/{secret['id']}").json()
        assert (mine["title"], mine["text"], mine["versions"], mine["rating"]) == (
            "Ada's diary",
            "Only Ada may read this.",
            1,
            None,
        )
