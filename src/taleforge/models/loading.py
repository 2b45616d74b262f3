"""Resolve a model spec and load it: the embedded model, a hub id, a local model or adapter."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from taleforge.errors import ModelLoadError, ModelNotFoundError
from taleforge.models import embedded
from taleforge.models.metadata import ModelMetadata, read_metadata

log = logging.getLogger(__name__)

#: Names that mean the embedded model.
EMBEDDED_ALIASES = frozenset({embedded.EMBEDDED_SPEC, "embedded"})
#: The default story model: a LoRA adapter of the embedded model that ships in the package.
STORY_MODEL_SPEC = "taleforge-stories"
STORY_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / STORY_MODEL_SPEC
STORY_MODEL_ALIASES = frozenset({STORY_MODEL_SPEC, "default"})
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


class SourceKind(StrEnum):
    EMBEDDED = "embedded"
    HUB = "hub"
    LOCAL = "local"
    ADAPTER = "adapter"


@dataclass(frozen=True)
class ResolvedSpec:
    """Where a spec points: its kind and, for local kinds, its directory."""

    spec: str
    kind: SourceKind
    path: Path | None = None


@dataclass
class LoadedModel:
    """A model ready to generate, with the tokenizer and metadata that belong to it."""

    spec: str
    kind: SourceKind
    model: Any  # transformers.PreTrainedModel (adapters are merged into their base)
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    metadata: ModelMetadata
    path: Path | None = None
    #: The context window when ``model`` is None (loaded without weights, for a backend
    #: that brings its own, such as llama.cpp).
    window: int | None = None
    #: Held while a generation runs: one model instance decodes one sequence at a time,
    #: and seeding uses the process-wide torch generator.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def context_length(self) -> int:
        """Most tokens the model attends to (prompt + generated)."""
        if self.model is None:
            return self.window or 2048
        config = self.model.config
        for attribute in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
            value = getattr(config, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def resolve_spec(spec: str) -> ResolvedSpec:
    """Decide what a spec names, without loading anything.

    Raises:
        ModelNotFoundError: A path that does not exist, a directory without model files, or a
            string that is neither a known name nor a valid hub id.
    """
    text = spec.strip()
    if text.lower() in EMBEDDED_ALIASES:
        return ResolvedSpec(embedded.EMBEDDED_SPEC, SourceKind.EMBEDDED)
    if text.lower() in STORY_MODEL_ALIASES and not Path(text).exists():
        if not (STORY_MODEL_DIR / "adapter_config.json").is_file():
            raise ModelNotFoundError(
                f"the default story model is missing from {STORY_MODEL_DIR}: reinstall "
                f"taleforge, or use '{embedded.EMBEDDED_SPEC}'"
            )
        return ResolvedSpec(STORY_MODEL_SPEC, SourceKind.ADAPTER, STORY_MODEL_DIR)
    path = Path(text).expanduser()
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        exists = is_dir = False
    if is_dir:
        if (path / "adapter_config.json").is_file():
            return ResolvedSpec(text, SourceKind.ADAPTER, path.resolve())
        if (path / "config.json").is_file():
            return ResolvedSpec(text, SourceKind.LOCAL, path.resolve())
        raise ModelNotFoundError(
            f"directory '{text}' holds no model: expected config.json (a full model) or "
            "adapter_config.json (a LoRA adapter). Point --model at a model directory."
        )
    # Hub ids are "name" or "owner/name"; anything else with a slash is a (missing) path.
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path or exists or not _HUB_ID_RE.match(text):
        raise ModelNotFoundError(
            f"model '{text}' not found: it is not a directory, a Hugging Face id or a known "
            f"name. Use '{embedded.EMBEDDED_SPEC}' (embedded), a hub id such as 'gpt2', or "
            "the path of a model directory (`taleforge models` lists what is here)."
        )
    return ResolvedSpec(text, SourceKind.HUB)


def training_base(spec: str) -> str:
    """The model that training and data preparation start from for ``spec``.

    The default story model is itself a LoRA adapter of the embedded model; fine-tuning
    "the default" means fine-tuning that base on your data. Any other spec is its own base.
    """
    if spec.strip().lower() in STORY_MODEL_ALIASES and not Path(spec).exists():
        return embedded.EMBEDDED_SPEC
    return spec


def adapter_base(directory: Path) -> str:
    """The spec of the base model a LoRA adapter directory applies to.

    Raises:
        ModelLoadError: The adapter's files do not name a readable base.
    """
    try:
        adapter_config = json.loads((directory / "adapter_config.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{directory}/adapter_config.json unreadable: {exc}") from None
    metadata = read_metadata(directory)
    base_spec = (metadata.base_model if metadata else None) or adapter_config.get(
        "base_model_name_or_path"
    )
    if not base_spec:
        raise ModelLoadError(
            f"adapter '{directory}' does not name its base model: add base_model_name_or_path "
            "to adapter_config.json"
        )
    return str(base_spec)


def load_model(
    spec: str = embedded.EMBEDDED_SPEC, *, dtype: str = "float32", trust_remote_code: bool = False
) -> LoadedModel:
    """Load a model and its tokenizer from a spec.

    Args:
        spec: ``smollm2-135m`` (embedded), a hub id (``gpt2``), a model or adapter directory.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        trust_remote_code: Allow hub models with custom code.

    Raises:
        ModelNotFoundError: Nothing loadable under that spec here (offline and uncached, ...).
        ModelLoadError: Files were found but are broken or incomplete.
    """
    resolved = resolve_spec(spec)
    options: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if resolved.kind is SourceKind.EMBEDDED:
        directory = embedded.ensure_converted()
        return _load_directory(resolved.spec, SourceKind.EMBEDDED, directory, options)
    if resolved.kind is SourceKind.LOCAL:
        assert resolved.path is not None
        return _load_directory(resolved.spec, SourceKind.LOCAL, resolved.path, options)
    if resolved.kind is SourceKind.ADAPTER:
        assert resolved.path is not None
        return _load_adapter(resolved.spec, resolved.path, options)
    return _load_hub(resolved.spec, options)


def load_tokenizer(spec: str = embedded.EMBEDDED_SPEC) -> Any:
    """Load only the tokenizer of a model spec (fast: no weights are read).

    Raises:
        ModelNotFoundError: As :func:`load_model`.
    """
    from transformers import AutoTokenizer

    resolved = resolve_spec(spec)
    if resolved.kind is SourceKind.EMBEDDED:
        location = str(embedded.ensure_converted())
    elif resolved.path is not None:
        location = str(resolved.path)
        if (
            resolved.kind is SourceKind.ADAPTER
            and not (resolved.path / "tokenizer_config.json").is_file()
        ):
            config = json.loads((resolved.path / "adapter_config.json").read_text("utf-8"))
            return load_tokenizer(config["base_model_name_or_path"])
    else:
        location = resolved.spec
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
        except OSError:
            if hub_offline() or not hub_reachable():
                raise ModelNotFoundError(
                    f"the tokenizer of '{location}' is not in the Hugging Face cache "
                    f"({hf_cache_dir()}) and the hub cannot be reached: pass a local model "
                    "directory or a cached model"
                ) from None
            tokenizer = AutoTokenizer.from_pretrained(location)
        return _with_pad(tokenizer)
    try:
        return _with_pad(AutoTokenizer.from_pretrained(location))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the tokenizer in '{location}': {_first_line(exc)}"
        ) from None


def load_without_weights(spec: str, window: int) -> LoadedModel:
    """A model's tokenizer and metadata without its weights, for a backend that brings its
    own (llama.cpp reads a GGUF export). ``model`` is None; ``window`` is its context.

    Raises:
        ModelNotFoundError, ModelLoadError: As :func:`load_model`.
    """
    resolved = resolve_spec(spec)
    tokenizer = load_tokenizer(spec)
    directory = resolved.path
    base_spec = None
    if resolved.kind is SourceKind.EMBEDDED:
        directory = embedded.converted_dir()
    elif resolved.kind is SourceKind.ADAPTER:
        assert directory is not None
        base_spec = adapter_base(directory)
    loaded = _finish(resolved.spec, resolved.kind, None, tokenizer, directory, base_spec)
    loaded.window = window
    return loaded


def _with_pad(tokenizer: Any) -> Any:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_directory(
    spec: str, kind: SourceKind, directory: Path, options: dict[str, Any]
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        model = AutoModelForCausalLM.from_pretrained(str(directory), **options)
    except Exception as exc:  # safetensors, tokenizers and torch raise their own types
        raise ModelLoadError(
            f"cannot load the model in '{directory}': {_first_line(exc)}. The directory is "
            "incomplete or corrupt; re-create it (re-run training or `taleforge models`)."
        ) from None
    return _finish(spec, kind, model, tokenizer, directory)


def _load_adapter(spec: str, directory: Path, options: dict[str, Any]) -> LoadedModel:
    from peft import PeftModel
    from transformers import AutoTokenizer

    base_spec = adapter_base(directory)
    base = load_model(base_spec, **options)
    tokenizer = base.tokenizer
    if (directory / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        if len(tokenizer) > base.model.get_input_embeddings().num_embeddings:
            # the added rows are then loaded from the adapter
            base.model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    try:
        model = PeftModel.from_pretrained(base.model, str(directory))
        # Folded into the base weights, the adapter costs nothing per token (unmerged LoRA
        # layers slowed generation by about a third).
        model = model.merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(
            f"cannot apply the adapter in '{directory}' to '{base_spec}': {_first_line(exc)}"
        ) from None
    return _finish(spec, SourceKind.ADAPTER, model, tokenizer, directory, base_spec)


def _load_hub(repo_id: str, options: dict[str, Any]) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # The cache first: it needs no network and answers at once.
        tokenizer = AutoTokenizer.from_pretrained(repo_id, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(repo_id, local_files_only=True, **options)
        return _finish(repo_id, SourceKind.HUB, model, tokenizer, None)
    except OSError:
        pass
    if hub_offline() or not hub_reachable():
        raise ModelNotFoundError(
            f"model '{repo_id}' is not in the Hugging Face cache ({hf_cache_dir()}) and the "
            "hub cannot be reached (offline). Either download it where there is internet "
            f"(`hf download {repo_id}`) and copy the cache here or set HF_HOME to a cache "
            f"that has it, or pass a local directory with --model /path/to/{repo_id}."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(repo_id)
        model = AutoModelForCausalLM.from_pretrained(repo_id, **options)
    except OSError as exc:
        raise ModelNotFoundError(
            f"cannot load '{repo_id}' from the hub: {_first_line(exc)}"
        ) from None
    return _finish(repo_id, SourceKind.HUB, model, tokenizer, None)


def _finish(
    spec: str,
    kind: SourceKind,
    model: Any,
    tokenizer: Any,
    directory: Path | None,
    base_spec: str | None = None,
) -> LoadedModel:
    if model is not None:
        model.eval()
    _with_pad(tokenizer)
    metadata = read_metadata(directory) if directory is not None else None
    if metadata is None:
        metadata = ModelMetadata(
            name=spec if directory is None else directory.name,
            base_model=base_spec,
            template="chat" if getattr(tokenizer, "chat_template", None) else "plain",
        )
    return LoadedModel(spec, kind, model, tokenizer, metadata, directory)


def hub_offline() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(
        f.upper() in ("1", "ON", "YES", "TRUE") for f in flags
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub endpoint, so an offline machine fails in seconds."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
