"""Model specs and loading: the embedded model, hub ids, local models and LoRA adapters."""

from taleforge.models.embedded import EMBEDDED_SPEC, cache_root, ensure_converted
from taleforge.models.export import ExportResult, export_gguf
from taleforge.models.listing import ModelEntry, list_models
from taleforge.models.loading import (
    STORY_MODEL_SPEC,
    LoadedModel,
    ResolvedSpec,
    SourceKind,
    load_model,
    load_tokenizer,
    resolve_spec,
    training_base,
)
from taleforge.models.metadata import METADATA_FILE, ModelMetadata, read_metadata, write_metadata

__all__ = [
    "EMBEDDED_SPEC",
    "METADATA_FILE",
    "STORY_MODEL_SPEC",
    "ExportResult",
    "LoadedModel",
    "ModelEntry",
    "ModelMetadata",
    "ResolvedSpec",
    "SourceKind",
    "cache_root",
    "ensure_converted",
    "export_gguf",
    "list_models",
    "load_model",
    "load_tokenizer",
    "read_metadata",
    "resolve_spec",
    "training_base",
    "write_metadata",
]
