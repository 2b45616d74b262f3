"""A story's context moves instead of being read again (llama.cpp).

A slot's KV cache serves the next context as far as it can: the common prefix always, and on
rotary models the chunks that reappear further on (a window that slid, a Continue whose
author's note moved), moved into place. A Continue goes to the slot that holds its story.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from needs import need_llama_cpp
from taleforge.generate.backends.llama_engine import REUSE_MIN_CHUNK, Sequence, reuse_plan

HEADER = list(range(1000, 1020))
STORY = list(range(2000, 2600))
NOTE = list(range(3000, 3010))


# -- what a cache serves --------------------------------------------------------------------------


def test_the_common_prefix_is_kept_and_the_last_token_read_again():
    plan = reuse_plan(HEADER + STORY[:100], HEADER + STORY[:100], shift=True)
    assert plan.common == 119 and plan.moves == () and plan.reused == 119


def test_a_cut_near_the_end_moves_what_follows_it():
    cut = HEADER + STORY[:50] + STORY[60:100]
    plan = reuse_plan(HEADER + STORY[:100], cut, shift=True)
    assert plan.common == 70
    assert plan.moves == ((80, 70, 39),)  # the last token is read again
    # a word typed in is read with what follows it (the cache is searched for the
    # context's next token, as llama-server does)
    typed = HEADER + STORY[:50] + [7] + STORY[50:100]
    assert reuse_plan(HEADER + STORY[:100], typed, shift=True).reused == 70


def test_a_slid_window_moves_the_story_down_after_the_header():
    cached = HEADER + STORY[:500]
    context = HEADER + STORY[50:550]  # 50 tokens left the window, 50 new at the end
    plan = reuse_plan(cached, context, shift=True)
    assert plan.common == len(HEADER)
    assert plan.moves == ((len(HEADER) + 50, len(HEADER), 450),)
    assert len(context) - plan.reused == 50
    assert reuse_plan(cached, context, shift=False).reused == len(HEADER)  # GPT-2: prefix only


def test_an_authors_note_that_moved_leaves_only_the_tail_to_read():
    depth = 48
    cached = HEADER + STORY[: 500 - depth] + NOTE + STORY[500 - depth : 500]
    context = HEADER + STORY[50 : 550 - depth] + NOTE + STORY[550 - depth : 550]
    plan = reuse_plan(cached, context, shift=True)
    assert [length for _, _, length in plan.moves] == [500 - depth - 50, depth]
    assert len(context) - plan.reused == len(NOTE) + 50  # the note and the new end


def test_short_coincidences_are_read_not_moved():
    cached = HEADER + STORY[:100]
    context = HEADER + [5] * 30 + STORY[: REUSE_MIN_CHUNK - 1] + [6]
    assert reuse_plan(cached, context, shift=True).moves == ()


# -- on the model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def story_engine():
    """The default story model (SmolLM2: rotary positions) on llama.cpp, 2 slots."""
    need_llama_cpp()
    from taleforge.generate.backends import open_model

    loaded, backend = open_model(
        "taleforge-stories", backend="llama.cpp", parallel=2, context_length=1024
    )
    assert backend.engine.can_shift
    yield loaded, backend
    backend.close()


def corpus_tokens(tokenizer, count: int) -> list[int]:
    sample = Path(__file__).resolve().parents[2] / "data" / "sample" / "stories.csv"
    ids = tokenizer(sample.read_text(encoding="utf-8")[:20000])["input_ids"]
    assert len(ids) >= count
    return list(ids[:count])


class _Grab:
    """A chooser that keeps the logits and picks the likeliest token."""

    logits = None

    def choose(self, logits):
        self.logits = logits.clone()
        return int(logits.argmax())


def next_logits(engine, context: list[int], slot: int = 0):
    grab = _Grab()
    sequence = Sequence(
        slot=slot,
        context=list(context),
        chooser=grab,  # type: ignore[arg-type]
        max_new_tokens=1,
        eos_ids=frozenset(),
        on_token=lambda token: None,
        should_stop=lambda: False,
    )
    engine.submit(sequence)
    assert sequence.out.get(timeout=120) is not None
    return grab.logits


def kl(reference, other) -> float:
    import torch

    p, q = torch.log_softmax(reference, -1), torch.log_softmax(other, -1)
    return float((p.exp() * (p - q)).sum())


@pytest.mark.integration
def test_a_moved_window_reads_only_its_new_end_and_predicts_as_a_full_read(story_engine):
    """The manuscript of a Continue slid by 50 tokens: only those are read, and the model's
    next-token distribution is the one of a full read (a wrong position would not be)."""
    loaded, backend = story_engine
    engine = backend.engine
    tokens = corpus_tokens(loaded.tokenizer, 1200)
    header = tokens[:20]
    before = header + tokens[100:700]
    after = header + tokens[150:750]
    engine._forget(0)
    next_logits(engine, before)
    reused = engine.reused_tokens
    moved = next_logits(engine, after)
    assert engine.reused_tokens - reused == len(after) - 50  # only the new 50 are read
    engine._forget(0)
    fresh = next_logits(engine, after)
    unrelated = next_logits(engine, header + tokens[600:1100], slot=1)
    assert kl(fresh, moved) < 0.05, kl(fresh, moved)  # measured 0.007
    assert kl(fresh, unrelated) > 1.0
    assert set(fresh.topk(5).indices.tolist()) & set(moved.topk(5).indices.tolist())


@pytest.mark.integration
def test_without_context_shift_a_story_is_the_one_read_afresh(story_engine):
    """``model.context_shift = false``: what a slot held never changes a greedy story."""
    loaded, backend = story_engine
    engine = backend.engine
    tokens = corpus_tokens(loaded.tokenizer, 1200)
    context = tokens[:20] + tokens[150:750]
    engine.can_shift = False
    try:
        next_logits(engine, tokens[:20] + tokens[100:700])
        warm = next_logits(engine, context)
        engine._forget(0)
        fresh = next_logits(engine, context)
    finally:
        engine.can_shift = True
    assert warm.equal(fresh)


def test_a_continue_goes_to_the_slot_that_holds_its_story(tiny_model):
    """Three stories on four slots, then the first again: it reads only its last token."""
    need_llama_cpp()
    from taleforge import StoryGenerator
    from taleforge.generate.backends import open_backend

    loaded, backend = open_backend(tiny_model, "llama.cpp", quantization="f32", parallel=4)
    generator = StoryGenerator(loaded, backend=backend)
    options = {"temperature": 0, "max_new_tokens": 4, "mode": "continue"}
    try:
        first = "The dragon slept beneath the castle and the"
        generator.generate(first, **options)
        generator.generate("A robot learned to paint the sea", **options)
        generator.generate("The queen of the moon was", **options)
        reused = backend.engine.reused_tokens
        generator.generate(first, **options)
        context = len(loaded.tokenizer(first)["input_ids"])
        assert backend.engine.reused_tokens - reused >= context - 1
    finally:
        generator.close()


def test_a_free_slot_is_chosen_by_what_it_holds_else_the_one_unused_longest():
    from taleforge.generate.backends.base import Places

    places = Places(3)
    assert [places.take() for _ in range(3)] == [0, 1, 2]
    for place in (1, 0, 2):
        places.give(place)
    assert places.take() == 1  # free longest
    places.give(1)
    assert places.take(score=lambda place: 5 if place == 2 else 0) == 2
