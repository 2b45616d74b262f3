"""Model specs and loading: the embedded model, hub ids, local models and LoRA adapters."""

from taleforge.models.embedded import EMBEDDED_SPEC, cache_root, ensure_converted
from taleforge.models.listing import ModelEntry, list_models
from taleforge.models.loading import (
    LoadedModel,
    ResolvedSpec,
    SourceKind,
    load_model,
    load_tokenizer,
    resolve_spec,
)
from taleforge.models.metadata import METADATA_FILE, ModelMetadata, read_metadata, write_metadata

__all__ = [
    "EMBEDDED_SPEC",
    "METADATA_FILE",
    "LoadedModel",
    "ModelEntry",
    "ModelMetadata",
    "ResolvedSpec",
    "SourceKind",
    "cache_root",
    "ensure_converted",
    "list_models",
    "load_model",
    "load_tokenizer",
    "read_metadata",
    "resolve_spec",
    "write_metadata",
]
