"""Trainer callbacks: MLflow metrics, sample stories at each evaluation, crash-safe saves."""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from taleforge.errors import DiskFullError
from taleforge.models import LoadedModel, ModelMetadata, SourceKind
from taleforge.tracking import NullTracker, perplexity
from taleforge.train import checkpoints

log = logging.getLogger(__name__)


class CrashSafeTrainer(Trainer):
    """A Trainer whose checkpoints count only once marked complete (see checkpoints.py)."""

    keep_checkpoints: int = 2

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = Path(self._get_output_dir(trial=trial))
        checkpoint = run_dir / f"checkpoint-{self.state.global_step}"
        try:
            super()._save_checkpoint(model, trial)
            if not self.args.should_save:
                return
            checkpoints.mark_complete(checkpoint)
        except Exception as exc:
            if not disk_full(exc, run_dir):
                raise
            # The half-written checkpoint would only take space and never be resumed from.
            if self.args.should_save:
                shutil.rmtree(checkpoint, ignore_errors=True)
            last = checkpoints.latest_complete(run_dir)
            free = shutil.disk_usage(run_dir).free if run_dir.exists() else 0
            resume = (
                f"run the same command again: it resumes from {last.name}, which is intact"
                if last is not None
                else "run the same command again (no checkpoint was saved yet)"
            )
            raise DiskFullError(
                f"the disk is full: {checkpoint.name} could not be saved in {run_dir} "
                f"({free / 1e6:.1f} MB free). Free some space (or set --train.output-dir on a "
                f"larger disk, or lower --train.save-total-limit), then {resume}"
            ) from None
        best = self.state.best_model_checkpoint
        checkpoints.rotate(run_dir, self.keep_checkpoints, Path(best) if best else None)


def disk_full(exc: BaseException, where: Path) -> bool:
    """Whether ``exc``, raised while writing under ``where``, means the disk is full.

    Plain writes and safetensors say so (ENOSPC, EDQUOT); torch.save only reports an
    "iostream error" or "file write failed", so a write error on a disk left with almost
    no free space counts too.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        usage = shutil.disk_usage(where)
    except OSError:
        return False
    return isinstance(exc, OSError | RuntimeError) and usage.free < max(2**20, usage.total // 100)


class BeforeTraining(TrainerCallback):
    """Runs ``action`` once, when training starts: by then the model is wrapped for DDP.

    Evaluating earlier (``trainer.evaluate()`` before ``trainer.train()``) makes accelerate mark
    the bare model as prepared, and training then skips the DDP wrapper: every process would
    train its own copy and no gradients would be averaged.
    """

    def __init__(self, action: Callable[[], None]) -> None:
        self.action: Callable[[], None] | None = action

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        action, self.action = self.action, None
        if action is not None:
            action()


class TrackingCallback(TrainerCallback):
    """Sends losses, perplexity and sample stories to the tracker (on the main process)."""

    def __init__(
        self,
        tracker: NullTracker,
        tokenizer: Any,
        metadata: ModelMetadata,
        prompts: tuple[str, ...],
        max_new_tokens: int,
    ) -> None:
        self.tracker = tracker
        self.tokenizer = tokenizer
        self.metadata = metadata
        self.prompts = prompts
        self.max_new_tokens = max_new_tokens
        self.samples: list[tuple[int, str, str]] = []

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        metrics = {k: v for k, v in logs.items() if isinstance(v, int | float)}
        if "eval_loss" in metrics:
            metrics["eval_perplexity"] = perplexity(metrics["eval_loss"])
        if "loss" in metrics:
            metrics["train_perplexity"] = perplexity(metrics["loss"])
        self.tracker.log_metrics(metrics, step=state.global_step)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or model is None or not self.prompts:
            return
        text = self.write_samples(model, state.global_step)
        self.tracker.log_text(text, f"samples/step-{state.global_step:06d}.md")

    def write_samples(self, model: Any, step: int) -> str:
        """Stories for the fixed prompts with a fixed seed, so steps can be compared."""
        from taleforge.generate import StoryGenerator

        was_training = model.training
        model.eval()
        loaded = LoadedModel("training", SourceKind.LOCAL, model, self.tokenizer, self.metadata)
        generator = StoryGenerator(loaded)
        parts = [f"# Samples at step {step}\n"]
        try:
            for prompt in self.prompts:
                story = generator.generate(
                    prompt, seed=0, max_new_tokens=self.max_new_tokens
                ).stories[0]
                self.samples.append((step, prompt, story.text))
                parts.append(f"## {prompt}\n\n{story.text}\n")
        finally:
            if was_training:
                model.train()
        return "\n".join(parts)
