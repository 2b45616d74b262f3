"""Training at scale: two processes under accelerate match one, streaming, mixed precision,
gradient checkpointing, and the accelerate/TOML presets in configs/."""

import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from test_resume import env, final_state, train_command

from taleforge import ConfigError, load_model
from taleforge.config import TrainConfig, load_config
from taleforge.train import train
from taleforge.train.setup import training_arguments

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE_PRESETS = ROOT / "configs" / "accelerate"
STEPS = 20


def accelerate_train(tiny_model_dir: Path, tiny_data: Path, run_dir: Path, *extra: str):
    """``accelerate launch --config_file configs/accelerate/cpu-ddp.yaml -m taleforge train``."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ACCELERATE_PRESETS / "cpu-ddp.yaml"),
            *train_command(tiny_model_dir, tiny_data, run_dir),
            *extra,
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def loss_curve(run_dir: Path) -> list[float]:
    """Training loss at every step, from the last checkpoint's trainer_state.json."""
    state = json.loads(
        (run_dir / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text()
    )
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def goes_down(curve: list[float]) -> bool:
    return statistics.mean(curve[-5:]) < statistics.mean(curve[:5]) - 0.3


def every_step(**train):
    """Train options for the comparisons: the loss at every step, one evaluation at the end."""
    steps = train.pop("max_steps", STEPS)
    return {
        "max_steps": steps,
        "eval_steps": steps,
        "save_steps": steps,
        "logging_steps": 1,
        "early_stopping_patience": 0,
        "tracking": False,
        **train,
    }


@pytest.fixture(scope="module")
def one_process(make_module_config):
    """The reference: one process, 8 rows a step, fp32, the loss logged at every step."""
    result = train(make_module_config("one-process", **every_step(batch_size=8)))
    return result, loss_curve(result.run_dir)


def two_processes(tiny_model_dir, tiny_data, run_dir: Path, *flags: str):
    """The same run in two processes under accelerate with 4 rows each: the same global batch
    of 8, seed and steps. Returns the run's result and loss curve."""
    for key in ("max-steps", "eval-steps", "save-steps"):
        flags += (f"--train.{key}", str(STEPS))
    run = accelerate_train(
        tiny_model_dir,
        tiny_data,
        run_dir,
        "--train.batch-size",
        "4",
        "--train.logging-steps",
        "1",
        *flags,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    checkpoint = run_dir / "checkpoints" / f"checkpoint-{STEPS}"
    assert sorted(p.name for p in checkpoint.glob("rng_state_*.pth")) == [
        "rng_state_0.pth",
        "rng_state_1.pth",
    ], "two processes took part"
    assert load_model(str(run_dir / "model")).kind.value == "local"
    return final_state(run_dir)["result"], loss_curve(run_dir)


def assert_same_curve(single_curve: list[float], double_curve: list[float]) -> None:
    """Both learn, and differ only by dropout noise: far less than the loss moves from one
    batch to the next (measured: 1/27 of it). Without gradient averaging each process trains
    its own copy on half the data (measured: 1/3 of it); with every process reading the same
    rows, the batches themselves differ."""
    assert len(double_curve) == len(single_curve) == STEPS
    assert goes_down(single_curve) and goes_down(double_curve)
    step_noise = statistics.median(abs(b - a) for a, b in itertools.pairwise(single_curve))
    gap = statistics.mean(abs(a - b) for a, b in zip(single_curve, double_curve, strict=True))
    assert gap < step_noise / 8, (gap, step_noise, single_curve, double_curve)


def test_two_processes_under_accelerate_match_one_process(
    one_process, tiny_model_dir, tiny_data, tmp_path
):
    single, single_curve = one_process
    double, double_curve = two_processes(tiny_model_dir, tiny_data, tmp_path / "two-processes")
    assert double["global_step"] == single.global_step == STEPS
    assert_same_curve(single_curve, double_curve)
    assert double["test_loss_after"] == pytest.approx(single.test_loss_after, rel=0.01)


def test_streaming_under_two_processes_matches_one_process(
    make_config, tiny_model_dir, tiny_data, tmp_path
):
    single = train(make_config("one-stream", **every_step(batch_size=8, streaming=True)))
    double, double_curve = two_processes(
        tiny_model_dir, tiny_data, tmp_path / "two-stream", "--train.streaming"
    )
    assert double["global_step"] == double["max_steps"] == single.global_step == STEPS
    # the first process reads the stream and hands each process its half of every batch
    assert_same_curve(loss_curve(single.run_dir), double_curve)
    assert double["test_loss_after"] == pytest.approx(single.test_loss_after, rel=0.01)


def test_streaming_without_max_steps_is_explained():
    with pytest.raises(ConfigError, match="streaming needs max_steps.*--train.max-steps"):
        load_config(overrides={"train.streaming": True})
    assert load_config(overrides={"train.streaming": True, "train.max_steps": 10}).train.streaming


def test_fp16_without_a_gpu_is_explained(tmp_path):
    import torch

    if torch.accelerator.is_available():
        pytest.skip("this machine has an accelerator, where fp16 is valid")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU.*--train.precision bf16"):
        training_arguments(TrainConfig(precision="fp16"), tmp_path, has_eval=True)


def test_bf16_on_cpu_is_mixed_precision_with_fp32_weights(one_process, make_config):
    import torch
    from safetensors.torch import load_file

    fp32, fp32_curve = one_process
    bf16 = train(make_config("bf16", **every_step(batch_size=8, precision="bf16")))
    bf16_curve = loss_curve(bf16.run_dir)
    # bf16 arithmetic really ran (not silently fp32), and it learns about as well
    assert bf16_curve != fp32_curve and goes_down(bf16_curve)
    assert bf16.test_loss_after != fp32.test_loss_after
    assert bf16.test_loss_after == pytest.approx(fp32.test_loss_after, rel=0.03)
    weights = load_file(bf16.model_dir / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}, (
        "a full fine-tune keeps fp32 master weights"
    )


def test_gradient_checkpointing_with_lora_recomputes_and_learns(make_config, monkeypatch):
    from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

    forward = GPT2MLP.forward  # inside each block: runs again when its block is recomputed
    training_calls = []

    def counted(self, *args, **kwargs):
        if self.training:  # evaluation and sample stories run in eval mode
            training_calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GPT2MLP, "forward", counted)
    steps, n_layer = 6, 2
    result = train(
        make_config(
            "lora-checkpointing",
            **every_step(
                max_steps=steps,
                method="lora",
                lora_target_modules=("c_attn",),
                learning_rate=2e-2,
                gradient_checkpointing=True,
            ),
        )
    )
    # every block ran twice per step: forward, then again in the backward pass, because its
    # activations were not kept (without checkpointing: once)
    assert len(training_calls) == 2 * steps * n_layer
    assert result.test_loss_after < result.test_loss_before - 0.01, "LoRA weights got gradients"


@pytest.mark.parametrize("preset", sorted(p.stem for p in ACCELERATE_PRESETS.glob("*.yaml")))
def test_accelerate_presets_load_in_accelerate(preset, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DistributedType
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = ACCELERATE_PRESETS / f"{preset}.yaml"
    cluster = load_config_from_file(str(path))
    assert isinstance(cluster, ClusterConfig)
    assert cluster.num_processes >= 2 and cluster.main_process_port == 0  # a free port
    monkeypatch.chdir(ROOT)
    args = launch_command_parser().parse_args(
        ["--config_file", str(path), "-m", "taleforge", "train"]
    )
    args, defaults, _ = _validate_launch_command(args)
    if cluster.distributed_type is DistributedType.DEEPSPEED:
        args.deepspeed_fields_from_accelerate_config = list(defaults.deepspeed_config)
        _, launch_env = prepare_deepspeed_cmd_env(args)
        ds_file = ROOT / launch_env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]
        assert json.loads(ds_file.read_text())["zero_optimization"]["stage"] == 3
        return
    launch_env = prepare_multi_gpu_env(args)
    assert int(args.main_process_port) not in (0, 29500), "port 0 becomes a free port"
    if cluster.distributed_type is DistributedType.FSDP:
        from accelerate.utils import FullyShardedDataParallelPlugin

        for name, value in launch_env.items():
            if name.startswith("FSDP_"):
                monkeypatch.setenv(name, value)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["GPT2Block"]


def test_multigpu_preset_loads_with_the_scale_switches():
    config = load_config("gpt2-medium-writingprompts-multigpu")
    train_cfg = config.train
    assert config.model.spec == "gpt2-medium" and config.data.format == "writingprompts"
    assert train_cfg.streaming and train_cfg.max_steps > 0
    assert train_cfg.precision == "bf16" and train_cfg.gradient_checkpointing
    assert train_cfg.method == "full"
