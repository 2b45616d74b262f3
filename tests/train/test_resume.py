"""Crash safety and scale-out: SIGKILL mid-training resumes; two processes under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from taleforge import load_model
from taleforge.train.checkpoints import COMPLETE_MARKER


def train_command(tiny_model_dir: Path, tiny_data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "taleforge",
        "train",
        "--model",
        str(tiny_model_dir),
        "--train.data",
        str(tiny_data),
        "--train.output-dir",
        str(run_dir),
        "--train.run-name",
        run_dir.name,
        "--train.method",
        "full",
        "--train.learning-rate",
        "3e-3",
        "--train.batch-size",
        "8",
        "--train.max-steps",
        "120",
        "--train.eval-steps",
        "10",
        "--train.save-steps",
        "10",
        "--no-train.tracking",
        "--train.early-stopping-patience",
        "0",
        *extra,
    ]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def final_state(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_sigkill_mid_training_resumes_to_the_same_end(tiny_model_dir, tiny_data, tmp_path):
    reference_dir = tmp_path / "uninterrupted"
    subprocess.run(
        [sys.executable, *train_command(tiny_model_dir, tiny_data, reference_dir)],
        env=env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    reference = final_state(reference_dir)["result"]

    run_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, *train_command(tiny_model_dir, tiny_data, run_dir)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = run_dir / "checkpoints" / "checkpoint-30" / COMPLETE_MARKER
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run was killed, not finished"
    assert not (run_dir / "model").exists()
    # A checkpoint the crash left half-written must never be picked up.
    fake = run_dir / "checkpoints" / "checkpoint-9990"
    fake.mkdir()
    (fake / "trainer_state.json").write_text("{ half written")

    resumed = subprocess.run(
        [sys.executable, *train_command(tiny_model_dir, tiny_data, run_dir)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "checkpoint-9990" in resumed.stderr
    assert not fake.exists()
    result = final_state(run_dir)["result"]
    assert result["resumed_from"] is not None
    assert result["global_step"] == reference["global_step"] == 120
    # optimizer, scheduler, RNG and data order were restored: the same end point
    assert abs(result["test_loss_after"] - reference["test_loss_after"]) < 1e-3
    assert load_model(str(run_dir / "model")).kind.value == "local"


def test_two_processes_under_torchrun(tiny_model_dir, tiny_data, tmp_path):
    single = tmp_path / "single"
    double = tmp_path / "double"
    common = ["--train.max-steps", "0", "--train.epochs", "1"]
    subprocess.run(
        [sys.executable, *train_command(tiny_model_dir, tiny_data, single), *common],
        env=env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",  # rendezvous on a free port: no clash with other jobs on this machine
            *train_command(tiny_model_dir, tiny_data, double)[0:],
            *common,
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    one = final_state(single)["result"]["global_step"]
    two = final_state(double)["result"]["global_step"]
    # each process takes half of every epoch's batches
    assert two == (one + 1) // 2
    assert load_model(str(double / "model")).kind.value == "local"


def test_a_new_run_folder_is_owner_only_whatever_the_umask(tmp_path):
    import os
    import stat

    from taleforge.train.run import _read_state, _write_state

    old = os.umask(0)
    try:
        _write_state(tmp_path / "runs" / "story", {"status": "running"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "runs" / "story").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "runs").stat().st_mode) == 0o700
    assert _read_state(tmp_path / "runs" / "story") == {"status": "running"}
