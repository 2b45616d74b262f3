"""Inference backends behind :class:`~taleforge.generate.StoryGenerator`, and choosing one.

``transformers`` runs any model taleforge loads (the reference). ``llama.cpp`` runs a GGUF
export of it, about 5x faster on a 2-core CPU, and writes concurrent stories in one batch.
``auto`` picks llama.cpp when it is installed and the model's architecture can be exported
(exporting it once, cached), else transformers, and logs why. ``remote`` is not a token-level
backend: a server returns text, not logits, so it is a generator of its own
(:class:`taleforge.generate.remote.RemoteStoryGenerator`).
"""

from __future__ import annotations

import logging

from taleforge.errors import ConfigError, TaleforgeError
from taleforge.generate.backends.base import Backend, DecodeStep
from taleforge.models import LoadedModel, load_model

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "transformers", "llama.cpp", "remote")

__all__ = ["BACKENDS", "Backend", "DecodeStep", "available_backends", "open_backend", "open_model"]


def available_backends() -> dict[str, str | None]:
    """Each backend's name and why it cannot run here (None when it can)."""
    from taleforge.generate.backends.llama import llama_cpp_missing

    return {"transformers": None, "llama.cpp": llama_cpp_missing()}


def _check_name(backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    if backend == "remote":
        raise ConfigError(
            "backend 'remote' writes through an OpenAI-compatible server and has no local "
            "model: use StoryGenerator.from_config with model.remote_url set (or "
            "RemoteStoryGenerator); what needs logits (perplexity, evaluation) needs "
            "--backend transformers or llama.cpp"
        )


def open_model(
    spec: str,
    *,
    backend: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    quantization: str = "q8_0",
    parallel: int = 1,
    context_length: int | None = None,
    threads: int = 0,
    context_shift: bool = True,
) -> tuple[LoadedModel, Backend]:
    """Load a model for generation on a backend.

    With llama.cpp and an up-to-date export, the PyTorch weights are never loaded (only the
    tokenizer and metadata); without one, the model is loaded, exported once (cached) and its
    PyTorch weights dropped.

    Args:
        spec: A model spec (see :func:`taleforge.load_model`).
        backend: ``auto``, ``transformers`` or ``llama.cpp``.
        dtype, trust_remote_code: As :func:`taleforge.load_model` (transformers).
        quantization: Of the GGUF export (llama.cpp).
        parallel: Stories decoded together (llama.cpp).
        context_length: Cap on context tokens per story.
        threads: CPU threads for llama.cpp (0 = one per core).
        context_shift: Move cached keys instead of re-reading (llama.cpp, rotary models;
            see ``model.context_shift``).

    Raises:
        ConfigError: An unknown backend, or llama.cpp asked for where it cannot run.
        ModelNotFoundError, ModelLoadError: As :func:`taleforge.load_model`.
    """
    _check_name(backend)
    loaded: LoadedModel | None = None
    if backend != "transformers" and _llama_usable(backend):
        from taleforge.models.export import find_export

        if find_export(spec, quantization) is None:
            loaded = load_model(spec, dtype="float32", trust_remote_code=trust_remote_code)
        try:
            return _llama(
                spec,
                loaded,
                quantization,
                parallel,
                context_length,
                threads,
                context_shift=context_shift,
                keep_weights=False,
            )
        except TaleforgeError as exc:
            if backend == "llama.cpp":
                raise
            log.warning("backend transformers for %s: llama.cpp cannot run it (%s)", spec, exc)
    if loaded is None or dtype != "float32":
        loaded = load_model(spec, dtype=dtype, trust_remote_code=trust_remote_code)
    return _transformers(loaded)


def open_backend(
    loaded: LoadedModel,
    backend: str = "transformers",
    *,
    quantization: str = "q8_0",
    parallel: int = 1,
    context_length: int | None = None,
    threads: int = 0,
    context_shift: bool = True,
) -> tuple[LoadedModel, Backend]:
    """A backend for a model already loaded with transformers (exported when needed)."""
    _check_name(backend)
    if backend != "transformers" and _llama_usable(backend):
        try:
            return _llama(
                loaded.spec,
                loaded,
                quantization,
                parallel,
                context_length,
                threads,
                context_shift=context_shift,
            )
        except TaleforgeError as exc:
            if backend == "llama.cpp":
                raise
            log.warning(
                "backend transformers for %s: llama.cpp cannot run it (%s)", loaded.spec, exc
            )
    return _transformers(loaded)


def _llama_usable(backend: str) -> bool:
    """Whether llama.cpp can run here; raises for an explicit request when it cannot."""
    missing = available_backends()["llama.cpp"]
    if missing is None:
        return True
    if backend == "llama.cpp":
        raise ConfigError(f"--backend llama.cpp: {missing}; or use --backend transformers")
    log.info("backend transformers: %s", missing)
    return False


def _transformers(loaded: LoadedModel) -> tuple[LoadedModel, Backend]:
    from taleforge.generate.backends.hf import TransformersBackend

    return loaded, TransformersBackend(loaded)


def _llama(
    spec: str,
    loaded: LoadedModel | None,
    quantization: str,
    parallel: int,
    context_length: int | None,
    threads: int = 0,
    *,
    context_shift: bool = True,
    keep_weights: bool = True,
) -> tuple[LoadedModel, Backend]:
    from dataclasses import replace

    from taleforge.generate.backends.llama import LlamaCppBackend
    from taleforge.models.export import export_gguf
    from taleforge.models.loading import load_without_weights

    result = export_gguf(spec, quantization=quantization, loaded=loaded)
    engine = LlamaCppBackend(
        result.path,
        parallel=parallel,
        context_length=context_length,
        threads=threads or None,
        context_shift=context_shift,
    )
    if loaded is None:
        light = load_without_weights(spec, engine.context_length)
    elif keep_weights:
        light = loaded
    else:  # the float32 weights: hundreds of MB a server need not keep
        light = replace(loaded, model=None, window=engine.context_length)
    log.info(
        "backend llama.cpp for %s (%s, %d parallel, %d-token window)",
        spec,
        result.path.name,
        parallel,
        engine.context_length,
    )
    return light, engine
