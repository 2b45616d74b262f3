"""The hostile corpus through the story library and generation: never a 500, nothing lost.

tests/serve/test_api_bad_input.py sends malformed *bodies* to every route; this sends
well-formed requests whose *text* is hostile, and checks the round trip a writer relies on:
what the server says it saved is what it gives back (cleaned as documented), searching for
SQL never changes or reveals anything, exports are well-formed with a safe file name.
"""

from __future__ import annotations

import json
import re
import zipfile
from io import BytesIO
from pathlib import Path

import httpx
from rel_corpus import CORPUS, as_text
from rel_helpers import serve_process, sqlite_integrity

from taleforge.serve.sanitize import clean_text


def post_json(client: httpx.Client, path: str, body: dict[str, object]) -> httpx.Response:
    """JSON with ASCII escapes, as browsers send lone surrogates (httpx refuses to encode)."""
    headers = {"content-type": "application/json"}
    return client.post(path, content=json.dumps(body), headers=headers)


def check_one(
    client: httpx.Client, name: str, text: str, kept: dict[int, str], failures: list[str]
) -> None:
    """Save, export, search for and generate from one hostile text; failures are noted."""
    saved = post_json(client, "/api/stories", {"text": text, "title": text[:200]})
    if saved.status_code >= 500 or saved.status_code not in (201, 413, 422):
        failures.append(f"save [{name}]: {saved.status_code} {saved.text[:200]}")
        return
    if saved.status_code != 201:
        # Refused: it must say why, in the documented JSON shape.
        if not saved.json()["error"]["message"]:
            failures.append(f"save [{name}]: refused without a reason")
        return
    story = saved.json()
    kept[story["id"]] = story["text"]
    if story["text"] != clean_text(text):
        failures.append(f"save [{name}]: stored text is not the cleaned text")
    for fmt in ("txt", "md", "epub"):
        exported = client.get(f"/api/stories/{story['id']}/export", params={"format": fmt})
        disposition = exported.headers.get("content-disposition", "")
        if exported.status_code != 200 or not re.fullmatch(
            rf'attachment; filename="[a-z0-9-]+\.{fmt}"', disposition
        ):
            failures.append(f"export {fmt} [{name}]: {exported.status_code} {disposition}")
        elif fmt == "epub":
            with zipfile.ZipFile(BytesIO(exported.content)) as book:
                if book.testzip() is not None:
                    failures.append(f"export epub [{name}]: a corrupt archive")
    query = text[:500].encode("utf-8", "replace").decode()  # a URL has no surrogates
    found = client.get("/api/stories", params={"q": query})
    if found.status_code not in (200, 422):
        failures.append(f"search [{name}]: {found.status_code} {found.text[:200]}")
    generated = post_json(
        client, "/api/generate", {"prompt": text[:2000] or " ", "max_new_tokens": 2}
    )
    # Written, or refused (an empty prompt: 400) with a reason, never a 500.
    if generated.status_code != 200 and not (
        generated.status_code < 500 and generated.json()["error"]["message"]
    ):
        failures.append(f"generate [{name}]: {generated.status_code}")


def test_hostile_text_saved_searched_exported_and_generated_never_breaks_the_library(
    database_url: str, tiny_model_dir: Path
):
    failures: list[str] = []
    kept: dict[int, str] = {}
    with serve_process(tiny_model_dir, database_url) as (_, url):
        client = httpx.Client(base_url=url, timeout=120)
        canary = client.post("/api/stories", json={"text": "The canary sings.", "title": "c"})
        assert canary.status_code == 201
        kept[canary.json()["id"]] = "The canary sings."
        for name, raw in CORPUS:
            try:
                check_one(client, name, as_text(raw), kept, failures)
            except httpx.TransportError as exc:  # the server dropped the connection
                failures.append(f"[{name}]: {type(exc).__name__} {exc}")
                client = httpx.Client(base_url=url, timeout=120)

        # Nothing the corpus did (SQL, wildcards, traversal) removed or changed a story.
        for story_id, text in kept.items():
            story = client.get(f"/api/stories/{story_id}")
            if story.status_code != 200 or story.json()["text"] != text:
                failures.append(f"story {story_id} changed or vanished")
        listed = client.get("/api/stories", params={"limit": 500}).json()["stories"]
        assert {s["id"] for s in listed} == set(kept)
        everything = client.get("/api/stories", params={"q": "' OR '1'='1"}).json()["stories"]
        assert everything == [] or all("'1'='1" in s["excerpt"] for s in everything)
    assert not failures, "\n".join(failures)
    if database_url.startswith("sqlite"):
        assert sqlite_integrity(database_url) == "ok"
