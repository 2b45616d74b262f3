"""Fixtures for training tests: the sample data prepared with the tiny tokenizer."""

from pathlib import Path

import pytest

from taleforge.config import DataConfig, TaleforgeConfig
from taleforge.data import prepare

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "stories.csv"


@pytest.fixture(scope="session")
def tiny_data(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-data") / "prepared"
    prepare(DataConfig(input=str(SAMPLE), output=str(out), block_size=32), str(tiny_model_dir))
    return out


def tiny_config(tiny_model_dir: Path, tiny_data: Path, run_dir: Path, **train) -> TaleforgeConfig:
    """A fast config: full fine-tuning of the tiny GPT-2, tracking into the run's folder."""
    options = {
        "data": str(tiny_data),
        "output_dir": str(run_dir),
        "run_name": run_dir.name,
        "method": "full",
        "learning_rate": 3e-3,
        "batch_size": 8,
        "max_steps": 20,
        "eval_steps": 5,
        "save_steps": 5,
        "logging_steps": 5,
        "tracking_uri": f"sqlite:///{run_dir.parent / 'mlflow.db'}",
        "sample_prompts": ("The dragon",),
        "sample_max_new_tokens": 8,
    }
    options.update(train)
    return TaleforgeConfig.model_validate(
        {"model": {"spec": str(tiny_model_dir)}, "train": options}
    )


@pytest.fixture
def make_config(tiny_model_dir, tiny_data, tmp_path):
    """``make_config("name", **train_options)``: a tiny config whose run lives in tmp_path."""

    def build(name: str, **train) -> TaleforgeConfig:
        return tiny_config(tiny_model_dir, tiny_data, tmp_path / name, **train)

    return build


@pytest.fixture(scope="module")
def make_module_config(tiny_model_dir, tiny_data, tmp_path_factory):
    """Like ``make_config``, for a run that several tests of one module compare against."""
    folder = tmp_path_factory.mktemp("module-runs")

    def build(name: str, **train) -> TaleforgeConfig:
        return tiny_config(tiny_model_dir, tiny_data, folder / name, **train)

    return build
