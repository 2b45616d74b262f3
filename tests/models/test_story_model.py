"""The default story model that ships in the package: it loads, describes itself, writes each
mode in its shape, and reads held-out corpus text better than its base. Small samples only:
the full evaluation is `make evaluate-report`."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from taleforge import StoryGenerator, load_config, load_model
from taleforge.data.readers import read_dataset
from taleforge.data.templates import truncate_words
from taleforge.data.tokenize import assign_splits
from taleforge.models import STORY_MODEL_SPEC, SourceKind

pytestmark = pytest.mark.integration

SPEAKER_LINE = re.compile(r"^[A-Z][A-Za-z .'-]{0,30}: \S")


@pytest.fixture(scope="module")
def story_generator():
    return StoryGenerator(load_model(STORY_MODEL_SPEC))


def test_the_story_model_is_small_and_describes_itself():
    model = load_model(STORY_MODEL_SPEC)
    assert model.kind is SourceKind.ADAPTER
    assert model.metadata is not None and model.metadata.base_model == "smollm2-135m"
    assert model.metadata.template == "chat" and "horror" in model.metadata.genre_tags
    assert model.path is not None
    size = sum(p.stat().st_size for p in model.path.iterdir())
    assert size < 40 * 2**20, f"{model.path} is {size / 2**20:.1f} MB, over the 40 MB budget"
    card = (model.path / "README.md").read_text()
    assert "make story-model" in card and "corpus-finetune" in card


def test_generate_uses_the_story_model_by_default():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "taleforge",
            "generate",
            "[FANTASY] A dragon who is afraid of heights",
            "--seed",
            "3",
            "--max-new-tokens",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.split()) >= 15, run.stdout
    assert "taleforge-stories" in run.stderr.splitlines()[-1]


def test_a_story_starts_with_its_own_sentence_asked_the_way_it_was_taught(story_generator):
    story = story_generator.generate(
        "[FANTASY] A dragon who is afraid of heights", seed=3, max_new_tokens=40
    ).stories[0]
    assert "fantasy story based on this idea: A dragon who is afraid of heights" in (
        story.formatted_prompt
    )
    assert "[FANTASY]" not in story.formatted_prompt
    first = story.text.lstrip("\"'“‘ ")
    assert first[:1].isupper() or first[:1].isdigit(), story.text


@pytest.mark.parametrize("seed", [1, 2])
def test_a_poem_is_written_in_lines(story_generator, seed):
    poem = story_generator.generate(
        "the sea at night", mode="poem", seed=seed, max_new_tokens=100
    ).text
    lines = [line for line in poem.split("\n") if line.strip()]
    assert len(lines) >= 3, poem
    assert max(len(line.split()) for line in lines) <= 20, poem


def _speaker_lines(text: str) -> int:
    return sum(bool(SPEAKER_LINE.match(line)) for line in text.split("\n") if line.strip())


def test_a_dialogue_between_named_speakers_is_written_in_speaker_lines(story_generator):
    # Trained scenes are asked for by their speakers' names, as here (8 of 9 seeds measured;
    # two of three seeds must hold, so one unlucky sample on another CPU does not fail it).
    dialogues = [
        story_generator.generate(
            "JACK and WILL, two thieves, argue over a stolen crown",
            mode="dialogue",
            seed=seed,
            max_new_tokens=60,
        ).text
        for seed in (1, 2, 3)
    ]
    assert sum(_speaker_lines(d) >= 2 for d in dialogues) >= 2, dialogues


@pytest.mark.xfail(
    strict=True,
    reason="known weakness: the corpus's scenes were asked for by their speakers' names, so a "
    "scene with no names gets prose (1 of 9 seeds had speaker lines); see the model card. "
    "Strict: this fails the suite once the model learns it.",
)
def test_a_dialogue_without_names_is_written_in_speaker_lines(story_generator):
    dialogue = story_generator.generate(
        "two thieves argue over a stolen crown", mode="dialogue", seed=1, max_new_tokens=80
    ).text
    assert _speaker_lines(dialogue) >= 2, dialogue


def test_continue_mode_continues_the_text(story_generator):
    opening = "The clockmaker listened. Somewhere in the shop, a clock had stopped"
    result = story_generator.generate(opening, mode="continue", seed=2, max_new_tokens=30)
    assert result.text.startswith(opening)
    assert len(result.stories[0].generated_text.split()) >= 5


def test_auto_genre_leaves_an_unrelated_prompt_untagged(story_generator):
    story = story_generator.generate(
        "You missed your train on purpose", genre="auto", seed=1, max_new_tokens=8
    ).stories[0]
    assert story.genre is None, f"tagged {story.genre} ({story.genre_source})"


def _corpus_test_openings(count: int, words: int) -> list[str]:
    """Openings of works in the corpus test split: never trained on."""
    config = load_config("corpus-finetune")
    records = read_dataset(config.data).records
    test = [r for r in assign_splits(records, config.data)["test"] if r.part == 0]
    step = len(test) // count
    return [truncate_words(test[i * step].text, words) for i in range(count)]


def _per_word_perplexity(model, tokenizer, texts: list[str]) -> float:
    import torch

    total, words = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"][:512]])
            loss = float(model(input_ids=ids, labels=ids).loss)
            total += loss * (ids.shape[1] - 1)
            words += len(tokenizer.decode(ids[0]).split())
    return math.exp(total / words)


def test_the_story_model_reads_held_out_corpus_text_better_than_its_base():
    texts = _corpus_test_openings(6, 250)
    story = load_model(STORY_MODEL_SPEC)
    base = load_model("smollm2-135m")
    after = _per_word_perplexity(story.model, story.tokenizer, texts)
    before = _per_word_perplexity(base.model, base.tokenizer, texts)
    assert after < 0.85 * before, f"per-word perplexity {before:.1f} (base) -> {after:.1f}"


def test_chat_answers_a_follow_up_with_new_text(story_generator):
    first = story_generator.generate(
        "Write a short poem about the sea.", mode="chat", seed=1, max_new_tokens=50
    ).text
    history = [
        {"role": "user", "content": "Write a short poem about the sea."},
        {"role": "assistant", "content": first},
    ]
    darker = story_generator.generate(
        "Make it darker.", mode="chat", history=history, seed=1, max_new_tokens=50
    ).text
    assert first.strip() and darker.strip()
    assert darker.strip() != first.strip()
