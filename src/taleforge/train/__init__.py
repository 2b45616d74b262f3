"""Fine-tuning: LoRA or full, crash-safe checkpoints, early stopping, MLflow tracking."""

from taleforge.train.run import TrainResult, train

__all__ = ["TrainResult", "train"]
