"""taleforge: fine-tune language models on creative writing and co-write stories with them.

The public API::

    from taleforge import StoryGenerator, load_model
    generator = StoryGenerator(load_model("smollm2-135m"))
    print(generator.generate("magic castle", genre="auto", seed=7).text)
"""

from taleforge.config import SamplingParams, TaleforgeConfig, load_config
from taleforge.errors import ConfigError, ModelLoadError, ModelNotFoundError, TaleforgeError
from taleforge.generate import GenerationResult, Story, StoryGenerator, StoryStream
from taleforge.models import LoadedModel, list_models, load_model

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "GenerationResult",
    "LoadedModel",
    "ModelLoadError",
    "ModelNotFoundError",
    "SamplingParams",
    "Story",
    "StoryGenerator",
    "StoryStream",
    "TaleforgeConfig",
    "TaleforgeError",
    "__version__",
    "list_models",
    "load_config",
    "load_model",
]
