"""``taleforge models``: what can be loaded here, with sizes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from taleforge.models import embedded
from taleforge.models.metadata import METADATA_FILE

log = logging.getLogger(__name__)

#: Where trained runs are looked for, unless told otherwise.
DEFAULT_RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class ModelEntry:
    """One loadable model."""

    spec: str
    kind: str  # embedded, hub-cache, local, adapter
    size_bytes: int
    status: str  # ready, needs-conversion
    path: str | None = None


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def list_models(runs_dir: Path | None = None) -> list[ModelEntry]:
    """The embedded model, hub models in the local Hugging Face cache, and trained runs."""
    entries = [_embedded_entry(), *_story_model_entry()]
    entries.extend(_hub_cache_entries())
    entries.extend(_run_entries(runs_dir or DEFAULT_RUNS_DIR))
    return entries


def _embedded_entry() -> ModelEntry:
    if embedded.is_converted():
        target = embedded.converted_dir()
        return ModelEntry(
            embedded.EMBEDDED_SPEC, "embedded", directory_size(target), "ready", str(target)
        )
    try:
        gguf = embedded.find_gguf()
    except LookupError:
        return ModelEntry(embedded.EMBEDDED_SPEC, "embedded", 0, "not-installed")
    return ModelEntry(
        embedded.EMBEDDED_SPEC, "embedded", gguf.stat().st_size, "needs-conversion", str(gguf)
    )


def _story_model_entry() -> list[ModelEntry]:
    from taleforge.models.loading import STORY_MODEL_DIR, STORY_MODEL_SPEC

    if not STORY_MODEL_DIR.is_dir():
        return []
    status = "ready" if embedded.is_converted() else "needs-conversion"  # of its base
    size = directory_size(STORY_MODEL_DIR)
    return [ModelEntry(STORY_MODEL_SPEC, "adapter", size, status, str(STORY_MODEL_DIR))]


def _hub_cache_entries() -> list[ModelEntry]:
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception as exc:  # a missing or unreadable cache simply lists nothing
        log.debug("no Hugging Face cache: %s", exc)
        return []
    return [
        ModelEntry(repo.repo_id, "hub-cache", repo.size_on_disk, "ready", str(repo.repo_path))
        for repo in sorted(cache.repos, key=lambda r: r.repo_id)
        if repo.repo_type == "model"
    ]


_NOT_RUNS = frozenset({"mlartifacts", "mlruns", "checkpoints"})


def _run_entries(runs_dir: Path) -> list[ModelEntry]:
    if not runs_dir.is_dir():
        return []
    entries = []
    candidates = sorted(
        {
            p.parent
            for name in (METADATA_FILE, "config.json", "adapter_config.json")
            for p in runs_dir.glob(f"**/{name}")
        }
    )
    for directory in candidates:
        parts = directory.relative_to(runs_dir).parts
        # checkpoints, MLflow's copies of logged models, half-written staging directories
        if "checkpoint-" in directory.name or any(
            part in _NOT_RUNS or part.startswith(".") for part in parts
        ):
            continue
        kind = "adapter" if (directory / "adapter_config.json").is_file() else "local"
        if kind == "local" and not (directory / "config.json").is_file():
            continue
        entries.append(
            ModelEntry(str(directory), kind, directory_size(directory), "ready", str(directory))
        )
    return entries


def format_size(size_bytes: int) -> str:
    value = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
