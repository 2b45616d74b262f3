"""The real models on a few held-out sample stories (short: a handful of texts each)."""

import pytest

from taleforge import StoryGenerator, load_model
from taleforge.config import load_config
from taleforge.data import prepare
from taleforge.evaluate.dataset import known_genre
from taleforge.evaluate.perplexity import perplexity, score_sequences
from taleforge.evaluate.relevance import ranking_accuracy, ranking_candidates
from taleforge.evaluate.scoring import encode_story, pad_id, story_context

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Four test-split records of the sample data, prepared as the story model was."""
    config = load_config("sample-finetune").data.model_copy(
        update={"output": str(tmp_path_factory.mktemp("sample") / "prepared")}
    )
    records = prepare(config, "smollm2-135m").load_records()["test"]
    return [records[i] for i in (0, 5, 10, 15)]


@pytest.fixture(scope="module")
def story_generator():
    return StoryGenerator(load_model("taleforge-stories"))


def _perplexity(generator, records):
    sequences = []
    for record in records:
        context, chat = story_context(
            generator, "model", prompt=record["prompt"], genre=known_genre(record["genre"])
        )
        sequences.append(encode_story(generator, context, record["text"], chat=chat))
    return perplexity(
        generator.model.model,
        sequences,
        [len(r["text"].split()) for r in records],
        window=512,
        stride=256,
        pad_id=pad_id(generator),
    )


def test_fine_tuning_lowers_perplexity_on_held_out_stories(
    held_out, embedded_generator, story_generator
):
    base = _perplexity(embedded_generator, held_out)
    tuned = _perplexity(story_generator, held_out)
    assert base.words == tuned.words > 500
    assert tuned.per_word < base.per_word
    assert 5 < tuned.per_token < 100  # a language model, not noise


def test_the_story_model_tells_a_story_s_prompt_from_others(held_out, story_generator):
    candidates = ranking_candidates(len(held_out), 4, seed=0)
    losses = []
    for index, record in enumerate(held_out):
        sequences = []
        for candidate in candidates[index]:
            other = held_out[candidate]
            context, chat = story_context(
                story_generator, "model", prompt=other["prompt"], genre=known_genre(other["genre"])
            )
            sequences.append(
                encode_story(
                    story_generator, context, record["text"], chat=chat, max_story_tokens=64
                )
            )
        scores = score_sequences(story_generator.model.model, sequences)
        losses.append([nll / n for nll, n in scores])
    assert ranking_accuracy(losses) >= 0.75  # chance is 0.25
