"""The MLflow pyfunc wrapper of a taleforge model: a list of prompts in, stories out.

Logged "from code" (MLflow loads this file and calls ``set_model``), so no pickled object
has to survive across versions.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc


class StoryModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """Loads the logged model directory with taleforge and writes a story per prompt."""

    def load_context(self, context: Any) -> None:
        from taleforge import StoryGenerator, load_model

        self.generator = StoryGenerator(load_model(context.artifacts["model_dir"]))

    def predict(self, context, model_input, params=None):
        # (no type hints: MLflow would read them as an input schema)
        prompts = model_input if isinstance(model_input, list) else list(model_input.iloc[:, 0])
        return [self.generator.generate(str(p), **dict(params or {})).text for p in prompts]


mlflow.models.set_model(StoryModel())
