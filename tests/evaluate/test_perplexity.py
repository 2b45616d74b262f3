"""Sliding-window perplexity against an independent plain-PyTorch computation (tiny GPT-2)."""

import math

import pytest
import torch
import torch.nn.functional as F

from taleforge.evaluate.perplexity import (
    IGNORE_INDEX,
    TokenSequence,
    perplexity,
    score_sequences,
    window_spans,
)
from taleforge.generate import StoryGenerator

TEXT = (
    "The dragon slept beneath the castle while the wizard read his spells by candlelight. "
    "A robot on the space station counted the stars and sent a message to the planet below."
)


def reference_nll(model, ids, context_start):
    """Sum over tokens t of -log p(ids[t] | ids[context_start(t):t]), one forward pass per
    token, and the count of tokens scored (a token without context cannot be)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for t in range(1, len(ids)):
            if context_start(t) == t:
                continue
            context = torch.tensor([ids[context_start(t) : t]])
            log_probs = F.log_softmax(model(context).logits[0, -1].double(), dim=-1)
            total -= log_probs[ids[t]].item()
            count += 1
    return total, count


def test_window_spans_by_hand():
    # 10 tokens, window 4, stride 2: windows [0,4) [2,6) [4,8) [6,10); each scores the
    # tokens after the previous window's end
    assert window_spans(10, 4, 2) == [(0, 4, 0), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    assert window_spans(5, 8, 8) == [(0, 5, 0)]
    with pytest.raises(ValueError, match="stride"):
        window_spans(10, 4, 5)


def test_one_window_equals_the_full_sequence_loss(tiny_model):
    ids = tiny_model.tokenizer(TEXT)["input_ids"][:60]
    model = tiny_model.model
    result = perplexity(
        model, [TokenSequence(tuple(ids), tuple(ids))], [len(TEXT.split())], window=64, stride=64
    )
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
        expected = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
    assert result.tokens == len(ids) - 1
    assert result.nll == pytest.approx(expected, rel=1e-5)
    assert result.per_token == pytest.approx(math.exp(expected / (len(ids) - 1)), rel=1e-5)
    assert result.per_word == pytest.approx(math.exp(expected / len(TEXT.split())), rel=1e-5)


@pytest.mark.parametrize(("window", "stride"), [(16, 8), (16, 16), (12, 5)])
def test_sliding_window_matches_token_by_token_pytorch(tiny_model, window, stride):
    ids = tiny_model.tokenizer(TEXT)["input_ids"][:50]
    assert len(ids) == 50

    def context_start(t):
        # token t is scored by the first window that reaches past it: window k starts at
        # k * stride and ends at k * stride + window
        k = max(0, math.ceil((t + 1 - window) / stride))
        return k * stride

    expected, count = reference_nll(tiny_model.model, ids, context_start)
    result = perplexity(
        tiny_model.model,
        [TokenSequence(tuple(ids), tuple(ids))],
        [10],
        window=window,
        stride=stride,
        batch_tokens=40,
    )
    # with stride == window, each window's first token has no context and is not scored
    assert count == (49 if stride < window else 49 - 3)  # windows at 16, 32, 48
    assert result.tokens == count
    assert result.nll == pytest.approx(expected, rel=1e-4)
    assert len(result.window_perplexities) == len(window_spans(50, window, stride))


def test_context_tokens_are_read_but_not_scored(tiny_model):
    tokenizer = tiny_model.tokenizer
    context = tokenizer("The map led the explorers")["input_ids"]
    story = tokenizer(" across the desert, over the mountain")["input_ids"]
    ids = context + story

    expected, _ = reference_nll(tiny_model.model, ids, lambda t: 0)
    context_only, _ = reference_nll(tiny_model.model, context, lambda t: 0)
    [(nll, count)] = score_sequences(tiny_model.model, [TokenSequence.from_parts(context, story)])
    assert count == len(story)
    assert nll == pytest.approx(expected - context_only, rel=1e-4)


def test_batching_and_padding_do_not_change_scores(tiny_model):
    tokenizer = tiny_model.tokenizer
    texts = ["The dragon slept.", "A robot on the space station counted the stars.", "No."]
    sequences = [TokenSequence.from_parts([], tokenizer(t)["input_ids"]) for t in texts]
    one_by_one = score_sequences(tiny_model.model, sequences, batch_tokens=1)
    together = score_sequences(tiny_model.model, sequences, batch_tokens=4096, pad_id=5)
    for (a, n), (b, k) in zip(one_by_one, together, strict=True):
        assert n == k and a == pytest.approx(b, rel=1e-5)


def test_encode_story_masks_the_prompt_the_way_the_model_is_asked(tiny_model):
    from taleforge.evaluate.scoring import encode_story, story_context

    generator = StoryGenerator(tiny_model)
    context, chat = story_context(
        generator, "dataset", prompt="", genre=None, dataset_prefix="[FANTASY] a wizard"
    )
    sequence = encode_story(generator, context, "The dragon slept.", chat=chat)
    story_ids = tiny_model.tokenizer("The dragon slept.")["input_ids"]
    assert sequence.input_ids[-len(story_ids) :] == tuple(story_ids)
    assert sequence.labels[-len(story_ids) :] == tuple(story_ids)
    assert set(sequence.labels[: -len(story_ids)]) == {IGNORE_INDEX}
    assert tiny_model.tokenizer.decode(sequence.input_ids[: -len(story_ids)]) == (
        "[FANTASY] a wizard "
    )
    none, _ = story_context(generator, "none", prompt="a wizard", genre="fantasy")
    assert none == ""
