"""Trainer callbacks: MLflow metrics, sample stories at each evaluation, crash-safe saves."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from taleforge.models import LoadedModel, ModelMetadata, SourceKind
from taleforge.tracking import NullTracker, perplexity
from taleforge.train import checkpoints

log = logging.getLogger(__name__)


class CrashSafeTrainer(Trainer):
    """A Trainer whose checkpoints count only once marked complete (see checkpoints.py)."""

    keep_checkpoints: int = 2

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        run_dir = Path(self._get_output_dir(trial=trial))
        checkpoint = run_dir / f"checkpoint-{self.state.global_step}"
        checkpoints.mark_complete(checkpoint)
        best = self.state.best_model_checkpoint
        checkpoints.rotate(run_dir, self.keep_checkpoints, Path(best) if best else None)


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
                    prompt, seed=0, temperature=0.8, max_new_tokens=self.max_new_tokens
                ).stories[0]
                self.samples.append((step, prompt, story.text))
                parts.append(f"## {prompt}\n\n{story.text}\n")
        finally:
            if was_training:
                model.train()
        return "\n".join(parts)
