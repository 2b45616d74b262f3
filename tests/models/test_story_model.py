"""The default story model that ships in the package: it loads, generates, and it is
better than its base on held-out sample data."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from taleforge import StoryGenerator, load_config, load_model
from taleforge.data import prepare
from taleforge.models import STORY_MODEL_SPEC, SourceKind

pytestmark = pytest.mark.integration


def test_the_story_model_is_small_and_describes_itself():
    model = load_model(STORY_MODEL_SPEC)
    assert model.kind is SourceKind.ADAPTER
    assert model.metadata is not None and model.metadata.base_model == "smollm2-135m"
    assert "fantasy" in model.metadata.genre_tags and "[WP]" in model.metadata.special_tokens
    assert model.path is not None
    shipped = model.path
    size = sum(p.stat().st_size for p in shipped.iterdir())
    assert size < 25 * 2**20, f"{shipped} is {size / 2**20:.1f} MB, over the 25 MB budget"
    readme = (shipped / "README.md").read_text()
    assert "taleforge train --config sample-finetune" in readme


def test_generate_uses_the_story_model_by_default():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "taleforge",
            "generate",
            "A door in the sea",
            "--seed",
            "1",
            "--max-new-tokens",
            "24",
            "--genre",
            "fantasy",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip(), "a story on stdout"
    assert "taleforge-stories" in run.stderr.splitlines()[-1]


def _test_loss(model, dataset) -> float:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for row in dataset:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor([row["labels"]])
            tokens = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * tokens
            count += tokens
    return total / count


def test_the_story_model_beats_its_base_on_held_out_stories(tmp_path):
    """The sample data prepared exactly as for training: its test split was never trained on."""
    import torch

    config = load_config("sample-finetune", {"data.output": str(tmp_path / "data")})
    prepared = prepare(config.data, "smollm2-135m")
    test = prepared.load_dataset()["test"]
    assert len(test) >= 10

    story = load_model(STORY_MODEL_SPEC).model
    base = load_model("smollm2-135m").model
    torch.manual_seed(0)  # the base learns nothing of the added tags: give them rows
    base.resize_token_embeddings(len(prepared.load_tokenizer()))
    after, before = math.exp(_test_loss(story, test)), math.exp(_test_loss(base, test))
    assert after < 0.8 * before, f"perplexity {before:.1f} (base) -> {after:.1f} (fine-tuned)"


def test_story_model_follows_the_genre_tag():
    generator = StoryGenerator(load_model(STORY_MODEL_SPEC))
    result = generator.generate("The last train", genre="horror", seed=5, max_new_tokens=8)
    assert "[HORROR]" in result.stories[0].formatted_prompt
