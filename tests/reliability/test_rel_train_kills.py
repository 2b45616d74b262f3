"""Training killed (SIGKILL) at 5 random moments resumes each time and finishes; a disk that
fills up while a checkpoint is saved stops training with a clear error and loses nothing."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rel_helpers import ROOT, grow_disk, small_disk, taleforge_env

from taleforge.config import DataConfig
from taleforge.data import prepare
from taleforge.train.checkpoints import COMPLETE_MARKER, is_complete

MAX_STEPS = 200  # far more than five kills can reach, however fast the machine


@pytest.fixture(scope="module")
def prepared(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rel-train-data") / "prepared"
    sample = ROOT / "data" / "sample" / "stories.csv"
    prepare(DataConfig(input=str(sample), output=str(out), block_size=32), str(tiny_model_dir))
    return out


def newest_complete_step(run_dir: Path) -> int:
    steps = [
        int(m.group(1))
        for marker in (run_dir / "checkpoints").glob(f"checkpoint-*/{COMPLETE_MARKER}")
        if (m := re.fullmatch(r"checkpoint-(\d+)", marker.parent.name))
    ]
    return max(steps, default=0)


def test_training_killed_five_times_at_random_resumes_and_finishes(
    tiny_model_dir: Path, prepared: Path, tmp_path: Path
):
    seed = random.randrange(10**6)
    chance = random.Random(seed)
    run_dir = tmp_path / "killed-five-times"
    command = [sys.executable, "-m", "taleforge", "train", "--model", str(tiny_model_dir),
               "--train.data", str(prepared), "--train.output-dir", str(run_dir),
               "--train.run-name", run_dir.name, "--train.method", "full",
               "--train.learning-rate", "3e-3", "--train.batch-size", "8",
               "--train.max-steps", str(MAX_STEPS), "--train.eval-steps", "40",
               "--train.save-steps", "5", "--no-train.tracking",
               "--train.early-stopping-patience", "0"]  # fmt: skip
    reached = []
    for kill in range(5):
        log = tmp_path / f"run{kill}.log"
        with log.open("w") as out:
            process = subprocess.Popen(command, env=taleforge_env(), stdout=out, stderr=out)
            before = newest_complete_step(run_dir) if (run_dir / "checkpoints").exists() else 0
            deadline = time.monotonic() + 120
            # Wait for progress (a new complete checkpoint), then kill at a random moment of
            # what follows: mid-step, mid-evaluation or mid-checkpoint write.
            while process.poll() is None and time.monotonic() < deadline:
                if (run_dir / "checkpoints").exists() and newest_complete_step(run_dir) > before:
                    break
                time.sleep(0.01)
            time.sleep(chance.uniform(0.0, 0.5))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, (
            f"run {kill} (seed {seed}) ended by itself before the kill:\n{log.read_text()[-2000:]}"
        )
        if kill > 0:
            assert "resuming from" in log.read_text(), f"run {kill} did not resume (seed {seed})"
        reached.append(newest_complete_step(run_dir))
    assert reached == sorted(reached) and reached[-1] < MAX_STEPS, reached

    final = subprocess.run(
        command, env=taleforge_env(), capture_output=True, text=True, timeout=300
    )
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resuming from" in final.stderr
    result = json.loads((run_dir / "run.json").read_text())["result"]
    assert result["global_step"] == MAX_STEPS
    assert (run_dir / "model" / "config.json").is_file()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_a_full_disk_while_saving_a_checkpoint_stops_clearly_and_resumes(
    tiny_model_dir: Path, prepared: Path, tmp_path: Path
):
    def command(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "taleforge", "train", "--model", str(tiny_model_dir),
                "--train.data", str(prepared), "--train.output-dir", str(run_dir),
                "--train.run-name", "on-a-small-disk", "--train.method", "full",
                "--train.batch-size", "8", "--train.max-steps", "6", "--train.eval-steps", "2",
                "--train.save-steps", "2", "--train.save-total-limit", "1",
                "--no-train.tracking", "--train.early-stopping-patience", "0"]  # fmt: skip

    # How much one checkpoint takes: the disk below holds one and a half.
    reference = tmp_path / "reference" / "run"
    done = subprocess.run(command(reference), env=taleforge_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    one = folder_bytes(reference / "checkpoints" / "checkpoint-6")
    with small_disk(tmp_path / "disk", int(one * 1.5)) as disk:
        run_dir = disk / "run"
        full = subprocess.run(command(run_dir), env=taleforge_env(), capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert full.returncode == 2, full.stderr[-3000:]
        errors = [line for line in full.stderr.splitlines() if "taleforge: error:" in line]
        assert len(errors) == 1, full.stderr[-3000:]
        error = errors[0][errors[0].index("taleforge: error:") :]
        assert error.startswith("taleforge: error: the disk is full: checkpoint-4"), error
        assert "resumes from checkpoint-2, which is intact" in error
        assert "Traceback" not in full.stderr
        saved = run_dir / "checkpoints"
        assert is_complete(saved / "checkpoint-2")
        assert not (saved / "checkpoint-4").exists(), "the half-written checkpoint is removed"

        # Room again (as after freeing space): the same command picks up where it stopped.
        grow_disk(disk, one * 8)
        again = subprocess.run(command(run_dir), env=taleforge_env(), capture_output=True,
                               text=True, timeout=300)  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        assert "resuming from" in again.stderr and "checkpoint-2" in again.stderr
        result = json.loads((run_dir / "run.json").read_text())["result"]
        assert result["global_step"] == 6
        assert (run_dir / "model" / "config.json").is_file()
