"""The README's picture of the studio, taken in Chromium with the default story model.

Starts the app as `make run` does (a fresh library in a temporary folder), writes a story
with a lorebook entry, continues it, opens the context viewer and saves a screenshot:

    .venv/bin/python scripts/screenshot.py --output docs/img/studio.png
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from taleforge.config import load_config
from taleforge.serve.app import build_server, server_url

LOREBOOK = (
    "Mira, the smuggler: Mira is a one-eyed smuggler who owes the harbour master money.\n"
    "lighthouse, Orrin: Orrin keeps the lighthouse and has not slept since the storm."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/img/studio.png"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="taleforge-shot-"))
    config = load_config(
        None, {"serve.port": 0, "serve.database_url": f"sqlite:///{folder / 'library.db'}"}
    )
    server = build_server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    url = server_url(server, config)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)
            page.goto(url)
            page.wait_for_selector("#story textarea")
            page.fill("#title input", "The Harbour Debt")
            page.fill("#prompt textarea", "Mira rowed into the harbour at night")
            page.fill("#lorebook textarea", LOREBOOK)
            page.click("#write-btn")
            page.wait_for_function("document.querySelector('#status').innerText.startsWith('✓')")
            done = page.inner_text("#status")
            page.click("#continue-btn")
            page.wait_for_function(
                f"(d => document.querySelector('#status').innerText.startsWith('✓') && "
                f"document.querySelector('#status').innerText !== d)({done!r})"
            )
            page.click("#context")
            page.wait_for_selector("#context-view")
            page.wait_for_timeout(1000)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        shutil.rmtree(folder, ignore_errors=True)
    print(args.output)


if __name__ == "__main__":
    main()
