"""taleforge: fine-tune language models on creative writing and co-write stories with them.

The public API::

    from taleforge import StoryGenerator, load_model
    generator = StoryGenerator(load_model("taleforge-stories"))
    print(generator.generate("magic castle", genre="auto", seed=7).text)

    from taleforge import load_config, prepare, train
    config = load_config("sample-finetune")
    prepared = prepare(config.data, "smollm2-135m")   # clean, tag, template, tokenize
    result = train(config)                            # LoRA fine-tune, tracked in MLflow
"""

from taleforge.config import SamplingParams, TaleforgeConfig, load_config
from taleforge.data import DataError, PreparedData, prepare
from taleforge.errors import ConfigError, ModelLoadError, ModelNotFoundError, TaleforgeError
from taleforge.evaluate import evaluate
from taleforge.generate import GenerationResult, Story, StoryGenerator, StoryStream
from taleforge.models import LoadedModel, list_models, load_model
from taleforge.train import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "GenerationResult",
    "LoadedModel",
    "ModelLoadError",
    "ModelNotFoundError",
    "PreparedData",
    "SamplingParams",
    "Story",
    "StoryGenerator",
    "StoryStream",
    "TaleforgeConfig",
    "TaleforgeError",
    "TrainResult",
    "__version__",
    "evaluate",
    "list_models",
    "load_config",
    "load_model",
    "prepare",
    "train",
]
