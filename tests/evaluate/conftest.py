"""Fixtures for evaluation tests: the sample data prepared with the tiny tokenizer, a second
tiny model to compare against, and a config builder whose report lives in tmp_path."""

from pathlib import Path

import pytest

from taleforge.config import DataConfig, TaleforgeConfig
from taleforge.data import prepare

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "stories.csv"


@pytest.fixture(scope="session")
def eval_data(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval-data") / "prepared"
    prepare(DataConfig(input=str(SAMPLE), output=str(out), block_size=32), str(tiny_model_dir))
    return out


@pytest.fixture(scope="session")
def other_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A second tiny GPT-2: the same tokenizer and shape, other random weights."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("tiny-gpt2-b")
    torch.manual_seed(1)
    GPT2LMHeadModel(GPT2Config.from_pretrained(tiny_model_dir)).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def _eval_config(model_dir: Path, data: Path, output: Path, **evaluate) -> TaleforgeConfig:
    """A fast evaluation: 4 prompts, 16-token stories, small windows, no tracking."""
    options = {
        "data": str(data),
        "output_dir": str(output),
        "max_prompts": 4,
        "window": 32,
        "stride": 16,
        "ranking_prompts": 3,
        "tracking": False,
    }
    options.update(evaluate)
    return TaleforgeConfig.model_validate(
        {
            "model": {"spec": str(model_dir)},
            "sampling": {"max_new_tokens": 16, "trim_to_sentence": False},
            "evaluate": options,
        }
    )


@pytest.fixture(scope="session")
def eval_config():
    """``eval_config(model_dir, data, output, **evaluate)``: a fast evaluation config."""
    return _eval_config


@pytest.fixture
def make_eval_config(tiny_model_dir, eval_data, tmp_path):
    """``make_eval_config(**evaluate)``: a fast config of the tiny model, report in tmp_path."""

    def build(**evaluate) -> TaleforgeConfig:
        return _eval_config(tiny_model_dir, eval_data, tmp_path / "report", **evaluate)

    return build
