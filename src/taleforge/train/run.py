"""``train``: prepare → set up → fit (resumable) → evaluate → save → track.

A run lives in ``runs/<run_name>/``::

    checkpoints/checkpoint-N/   complete checkpoints only (optimizer, scheduler, RNG, data order)
    model/                      the self-describing trained model (``--model runs/<name>/model``)
    run.json                    status, config hash, MLflow run id, perplexity before training
    loss.png                    the loss curves

Re-running the same command resumes from the newest complete checkpoint; a finished run is
reported, not repeated (``--force`` starts over).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from taleforge.config import TaleforgeConfig
from taleforge.data import PreparedData, load_prepared, prepare
from taleforge.data.tokenize import spread_indices
from taleforge.errors import ConfigError
from taleforge.files import private_dir
from taleforge.models import ModelMetadata, training_base
from taleforge.tracking import flatten, make_tracker, perplexity
from taleforge.train import checkpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced."""

    run_dir: Path
    model_dir: Path
    global_step: int
    max_steps: int
    stopped_early: bool
    resumed_from: str | None
    test_loss_before: float | None
    test_loss_after: float | None
    best_eval_loss: float | None
    seconds: float
    mlflow_run_id: str | None
    already_done: bool = False

    @property
    def perplexity_before(self) -> float | None:
        return None if self.test_loss_before is None else perplexity(self.test_loss_before)

    @property
    def perplexity_after(self) -> float | None:
        return None if self.test_loss_after is None else perplexity(self.test_loss_after)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            run_dir=str(self.run_dir),
            model_dir=str(self.model_dir),
            perplexity_before=self.perplexity_before,
            perplexity_after=self.perplexity_after,
        )
        return data


def run_dir_of(config: TaleforgeConfig) -> Path:
    return Path(config.train.output_dir or Path("runs") / config.train.run_name)


def config_hash(config: TaleforgeConfig) -> str:
    """What must match to resume: everything but tracking and sampling settings."""
    data = config.model_dump(mode="json", exclude={"sampling": True, "generate": True})
    for key in (
        "gradient_checkpointing",  # same math; switch it on to resume a run that ran out of memory
        "tracking",
        "tracking_uri",
        "experiment",
        "register_model",
        "sample_prompts",
        "sample_max_new_tokens",
    ):
        data["train"].pop(key, None)
    data["data"].pop("num_proc", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _read_state(run_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((run_dir / "run.json").read_text("utf-8"))
        return state
    except (OSError, ValueError):
        return {}


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    private_dir(run_dir)  # a new run folder is owner-only (0700): its data may be private
    tmp = run_dir / ".run.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, run_dir / "run.json")


def _spread(rows: Any, most: int) -> Any:
    """At most ``most`` rows of a dataset split (0 = all), evenly spaced."""
    return rows if not most or len(rows) <= most else rows.select(spread_indices(len(rows), most))


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _prepared_data(config: TaleforgeConfig) -> PreparedData:
    if config.train.data:
        return load_prepared(config.train.data)
    # Several processes (torchrun) may get here at once: one prepares, the others reuse it.
    Path("runs").mkdir(exist_ok=True)
    with FileLock("runs/.prepare.lock", timeout=3600):
        return prepare(config.data, config.model.spec)


def train(config: TaleforgeConfig, *, force: bool = False, resume: bool = True) -> TrainResult:
    """Fine-tune ``config.model.spec`` on the prepared data; see the module docstring.

    Args:
        config: The whole config (``model``, ``data`` and ``train`` sections are used).
        force: Start over, deleting the run's checkpoints and model.
        resume: Continue from the newest complete checkpoint when there is one.

    Raises:
        ConfigError: Bad settings, or checkpoints of a different config in the run directory.
    """
    started = time.perf_counter()
    base = training_base(config.model.spec)
    if base != config.model.spec:
        log.info("training starts from %s, the base of %s", base, config.model.spec)
        config = config.model_copy(update={"model": config.model.model_copy(update={"spec": base})})
    run_dir = run_dir_of(config)
    checkpoint_dir = run_dir / "checkpoints"
    model_dir = run_dir / "model"
    wanted = config_hash(config)
    state = _read_state(run_dir)
    if force and _is_main_process():
        for path in (checkpoint_dir, model_dir):
            shutil.rmtree(path, ignore_errors=True)
        state = {}
    elif (
        state.get("status") == "finished"
        and state.get("config_hash") == wanted
        and (model_dir / "taleforge.json").is_file()
    ):
        log.info("%s is already trained with this config (use --force to train again)", run_dir)
        return _finished_result(run_dir, state, started)
    elif state.get("config_hash") not in (None, wanted) and checkpoints.checkpoints(checkpoint_dir):
        raise ConfigError(
            f"{run_dir} holds checkpoints of a run with a different config: resume it with "
            "its own config, start over with --force, or pick another --train.run-name"
        )

    prepared = _prepared_data(config)
    result = _fit(config, prepared, run_dir, state if resume else {}, resume, started)
    return result


def _fit(
    config: TaleforgeConfig,
    prepared: PreparedData,
    run_dir: Path,
    state: dict[str, Any],
    resume: bool,
    started: float,
) -> TrainResult:
    from transformers import EarlyStoppingCallback, default_data_collator, set_seed

    from taleforge.train.callbacks import BeforeTraining, CrashSafeTrainer, TrackingCallback
    from taleforge.train.setup import (
        prepare_model,
        stream_training_rows,
        training_arguments,
        write_model_dir,
    )

    train_cfg = config.train
    tokenizer = prepared.load_tokenizer()
    dataset = prepared.load_dataset()
    train_rows = dataset["train"]
    if train_cfg.streaming:
        train_rows = stream_training_rows(prepared, train_cfg.seed, train_cfg.shuffle_buffer)
    elif len(train_rows) == 0:
        raise ConfigError(
            f"{prepared.directory} has no training rows: the data is shorter than one block; "
            "lower --data.block-size or use --data.packing pad"
        )
    eval_rows = _spread(dataset["validation"], train_cfg.eval_rows) or None
    test_rows = _spread(dataset["test"], train_cfg.eval_rows) or eval_rows
    if eval_rows is None:
        log.warning("no validation rows: early stopping and best-model restore are off")

    # New token rows and LoRA weights start random: the same seed gives the same run, and
    # every process of a distributed run starts from the same weights.
    set_seed(train_cfg.seed)
    _, model, _ = prepare_model(config, tokenizer)
    template = prepared.manifest["template"]
    sample_metadata = ModelMetadata(
        name=train_cfg.run_name, template=template["name"], genre_tags=tuple(template["genre_tags"])
    )
    checkpoint_dir = run_dir / "checkpoints"
    main = _is_main_process()
    if main:
        checkpoints.discard_incomplete(checkpoint_dir)
    resume_from = checkpoints.latest_complete(checkpoint_dir) if resume else None

    tracker = make_tracker(
        train_cfg.tracking and main, train_cfg.tracking_uri, train_cfg.experiment
    )
    run_id = tracker.start(train_cfg.run_name, state.get("mlflow_run_id") if resume_from else None)
    state = {
        **state,
        "status": "running",
        "config_hash": config_hash(config),
        "mlflow_run_id": run_id,
        "data": str(prepared.directory),
        "data_fingerprint": prepared.fingerprint,
    }
    if main:
        _write_state(run_dir, state)
        tracker.log_params(flatten(config.model_dump(mode="json")))
        tracker.log_text(json.dumps(config.model_dump(mode="json"), indent=2), "config.json")
        for name in ("card.md", "card.json", "lengths.png"):
            tracker.log_artifact(prepared.directory / name, "data")

    args = training_arguments(train_cfg, checkpoint_dir, has_eval=eval_rows is not None)
    tracking = TrackingCallback(
        tracker,
        tokenizer,
        sample_metadata,
        train_cfg.sample_prompts,
        train_cfg.sample_max_new_tokens,
    )
    callbacks: list[Any] = [tracking]
    if test_rows is not None and "test_loss_before" not in state:

        def measure_before() -> None:
            log.info("measuring held-out loss before training ...")
            before = trainer.evaluate(eval_dataset=test_rows, metric_key_prefix="before")
            state["test_loss_before"] = before["before_loss"]
            if main:
                _write_state(run_dir, state)
                tracker.log_metrics(
                    {
                        "test_loss_before": before["before_loss"],
                        "test_perplexity_before": perplexity(before["before_loss"]),
                    },
                    step=0,
                )

        callbacks.append(BeforeTraining(measure_before))
    if args.load_best_model_at_end:
        callbacks.append(
            EarlyStoppingCallback(
                train_cfg.early_stopping_patience, train_cfg.early_stopping_threshold
            )
        )
    trainer = CrashSafeTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=default_data_collator,
        callbacks=callbacks,
        processing_class=tokenizer,
    )
    trainer.keep_checkpoints = train_cfg.save_total_limit

    try:
        if resume_from is not None and _finished_checkpoint(resume_from):
            # Training had ended before the crash (saving the model did not): restore, don't
            # train again (transformers would run one step past max_steps).
            log.info("training had finished at %s; restoring it", resume_from.name)
            _restore(trainer, resume_from)
        else:
            if resume_from is not None:
                log.info("resuming from %s", resume_from)
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except BaseException:
        tracker.end(status="FAILED")
        raise

    after = None
    if test_rows is not None:
        after = trainer.evaluate(eval_dataset=test_rows, metric_key_prefix="after")["after_loss"]
    best = trainer.state.best_metric
    evaluation = {
        "test_loss_before": state.get("test_loss_before"),
        "test_loss_after": after,
        "test_perplexity_before": perplexity(state["test_loss_before"])
        if state.get("test_loss_before") is not None
        else None,
        "test_perplexity_after": perplexity(after) if after is not None else None,
        "best_eval_loss": best,
        "global_step": trainer.state.global_step,
    }
    result = TrainResult(
        run_dir=run_dir,
        model_dir=run_dir / "model",
        global_step=trainer.state.global_step,
        max_steps=trainer.state.max_steps,
        stopped_early=trainer.state.global_step < trainer.state.max_steps,
        resumed_from=str(resume_from) if resume_from else None,
        test_loss_before=state.get("test_loss_before"),
        test_loss_after=after,
        best_eval_loss=best,
        seconds=round(time.perf_counter() - started, 1),
        mlflow_run_id=run_id,
    )
    if main:
        write_model_dir(run_dir / "model", trainer.model, tokenizer, config, prepared, evaluation)
        (run_dir / "history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        plot = _plot_losses(trainer.state.log_history, run_dir / "loss.png")
        tracker.log_artifact(plot)
        if after is not None:
            tracker.log_metrics(
                {"test_loss_after": after, "test_perplexity_after": perplexity(after)},
                step=trainer.state.global_step,
            )
        tracker.log_text(json.dumps(result.to_dict(), indent=2), "summary.json")
        tracker.log_model(
            run_dir / "model", train_cfg.run_name if train_cfg.register_model else None
        )
        _write_state(run_dir, {**state, "status": "finished", "result": result.to_dict()})
    tracker.end()
    return result


def _finished_checkpoint(checkpoint: Path) -> bool:
    state = json.loads((checkpoint / "trainer_state.json").read_text("utf-8"))
    return bool(state["global_step"] >= state["max_steps"])


def _restore(trainer: Any, checkpoint: Path) -> None:
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    trainer._load_from_checkpoint(str(checkpoint))
    best = trainer.state.best_model_checkpoint
    if trainer.args.load_best_model_at_end and best and Path(best).is_dir():
        trainer._load_best_model()


def _finished_result(run_dir: Path, state: dict[str, Any], started: float) -> TrainResult:
    saved = dict(state.get("result", {}))
    for key in ("perplexity_before", "perplexity_after"):
        saved.pop(key, None)
    saved.update(
        run_dir=run_dir,
        model_dir=run_dir / "model",
        already_done=True,
        seconds=round(time.perf_counter() - started, 1),
    )
    return TrainResult(**saved)


def _plot_losses(history: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train, strict=True), label="training loss")
    if evals:
        axis.plot(*zip(*evals, strict=True), marker="o", label="validation loss")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title("Fine-tuning loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
