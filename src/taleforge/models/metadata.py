"""``taleforge.json``: what a model directory says about itself.

A directory that taleforge wrote (the converted embedded model, a fine-tuned run) carries this
file next to its weights and tokenizer, so ``generate`` and ``serve`` format prompts the way
the model was trained without extra flags.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from taleforge.errors import ModelLoadError

METADATA_FILE = "taleforge.json"

Template = Literal["plain", "genre_tagged", "writing_prompt", "chat"]


class ModelMetadata(BaseModel):
    """Self-description of a model directory."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(description="Human-readable model name.")
    base_model: str | None = Field(None, description="Spec of the model this one derives from.")
    template: Template = Field(
        "plain",
        description="Prompt format the model was trained with: plain text, [GENRE]-tagged, "
        "[WP] prompt [RESPONSE] story, or the tokenizer's chat template.",
    )
    genre_tags: tuple[str, ...] = Field(
        (), description="Genres whose [TAG] the model saw in training; empty = untagged."
    )
    special_tokens: tuple[str, ...] = Field((), description="Tokens added to the tokenizer.")
    data_fingerprint: str | None = Field(None, description="Fingerprint of the training data.")
    description: str | None = Field(None, description="Where the model comes from.")
    config: dict[str, Any] = Field(default_factory=dict, description="Resolved training config.")
    evaluation: dict[str, Any] = Field(default_factory=dict, description="Evaluation summary.")


def read_metadata(directory: Path) -> ModelMetadata | None:
    """Read ``taleforge.json`` from a directory; None when the directory has none."""
    path = directory / METADATA_FILE
    if not path.is_file():
        return None
    try:
        return ModelMetadata.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        raise ModelLoadError(
            f"{path} is corrupt ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
            "restore it from the run's checkpoint or delete it to load the weights as plain text"
        ) from None


def write_metadata(directory: Path, metadata: ModelMetadata) -> Path:
    """Write ``taleforge.json`` atomically (a reader never sees half a file)."""
    path = directory / METADATA_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".taleforge-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(metadata.model_dump_json(indent=2))
    os.replace(tmp, path)
    return path
