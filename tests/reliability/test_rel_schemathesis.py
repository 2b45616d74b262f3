"""schemathesis against the server's own ``/openapi.json``: generated requests for every
documented operation, positive and negative, and not one answer is a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from rel_helpers import need, serve_process, taleforge_env


def test_no_generated_request_gets_a_server_error(tiny_model_dir: Path, tmp_path: Path):
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if binary is None:
        need("schemathesis is not installed (pip install -e '.[dev]')")
    database = f"sqlite:///{tmp_path / 'taleforge.db'}"
    # Short stories: the fuzzer asks for up to --max-new-tokens tokens per request.
    with serve_process(tiny_model_dir, database, "--max-new-tokens", "32") as (_, url):
        command = [binary, "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
                   "--max-examples", "25", "--workers", "1", "--request-timeout", "60",
                   "--seed", "20261123", "--no-color"]  # fmt: skip
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=600,
            env=taleforge_env(),
            cwd=tmp_path,
        )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    # And it really ran: well over a thousand generated requests at 25 examples an operation.
    cases = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert cases and int(cases.group(1)) >= 500 and cases.group(1) == cases.group(2), report
