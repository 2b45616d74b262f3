"""The samplers against their published definitions, on hand-made logits.

Expected numbers are worked out by hand in the comments: OpenAI's presence and frequency
penalties, DRY as llama.cpp's ``llama_sampler_dry`` (and text-generation-webui's
``DRYLogitsProcessor``), XTC as text-generation-webui's ``XTCLogitsWarper`` and llama.cpp's
``llama_sampler_xtc``, logit bias as OpenAI's.
"""

from __future__ import annotations

import math

import pytest
import torch

from taleforge import ConfigError
from taleforge.config import SamplingParams
from taleforge.generate.samplers import (
    DRY,
    ExcludeTopChoices,
    LogitBias,
    PresenceFrequencyPenalty,
)
from taleforge.generate.sampling import logits_processors
from taleforge.generate.vocabulary import SamplerVocabulary


def ids(*tokens: int) -> torch.Tensor:
    return torch.tensor([list(tokens)])


# -- presence and frequency penalties -------------------------------------------------------


def test_presence_and_frequency_penalties_count_the_generated_tokens_only():
    # context 5 6 (the prompt) + generated 1 1 2 in this step, 2 3 in an earlier window:
    # counts 1:2, 2:2, 3:1; logit -= 0.25 * count + 0.5 for each generated token
    penalty = PresenceFrequencyPenalty(0.5, 0.25, context_tokens=2, earlier_tokens=(2, 3))
    scores = torch.zeros(1, 8)
    out = penalty(ids(5, 6, 1, 1, 2), scores)
    assert out[0].tolist() == [0.0, -1.0, -1.0, -0.75, 0.0, 0.0, 0.0, 0.0]
    assert scores.abs().sum() == 0, "the input is left alone"


def test_negative_penalties_encourage_and_nothing_generated_changes_nothing():
    penalty = PresenceFrequencyPenalty(-1.0, 0.0, context_tokens=3)
    assert penalty(ids(1, 2, 3), torch.zeros(1, 4)).tolist() == [[0.0, 0.0, 0.0, 0.0]]
    assert penalty(ids(1, 2, 3, 2, 2), torch.zeros(1, 4)).tolist() == [[0.0, 0.0, 1.0, 0.0]]


# -- logit bias ----------------------------------------------------------------------------


def test_logit_bias_adds_to_the_named_tokens():
    bias = LogitBias({1: 2.5, 3: -100.0})
    out = bias(ids(0), torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0]]))
    assert out.tolist() == [[1.0, 3.5, 1.0, -99.0, 1.0]]


# -- DRY -------------------------------------------------------------------------------------


def dry(breakers=None, *, multiplier=0.8, base=1.75, allowed=2, last_n=-1):
    return DRY(multiplier, base, allowed, last_n, breakers or {})


def test_dry_penalises_the_token_that_would_extend_a_repetition():
    # 1 2 3 4 1 2 3: the last three tokens (1 2 3) appeared before, followed by 4;
    # penalty = 0.8 * 1.75 ** (3 - 2) = 1.4
    out = dry()(ids(1, 2, 3, 4, 1, 2, 3), torch.zeros(1, 6))
    assert out[0].tolist() == pytest.approx([0, 0, 0, 0, -1.4, 0])
    # a repetition of allowed_length tokens costs the multiplier itself
    assert dry().penalties([7, 8, 9, 7, 8]) == pytest.approx({9: 0.8})
    # one token shorter is free
    assert dry().penalties([7, 8, 9, 8]) == {}


def test_dry_takes_the_longest_match_for_each_token():
    # 1 2 9 | 5 2 8 | 1 2: "1 2" is followed by 9 (length 2), "2" alone by 8 (length 1,
    # under allowed_length 2): only 9 is penalised, by the multiplier
    assert dry().penalties([1, 2, 9, 5, 2, 8, 1, 2]) == pytest.approx({9: 0.8})
    # with allowed_length 1, 8 is penalised too, and 9 by 0.8 * 1.75 ** (2 - 1)
    assert dry(allowed=1).penalties([1, 2, 9, 5, 2, 8, 1, 2]) == pytest.approx({9: 1.4, 8: 0.8})


def test_a_sequence_breaker_stops_the_match():
    tokens = [1, 2, 5, 3, 4, 1, 2, 5, 3]
    # without breakers: "1 2 5 3" repeats, followed by 4: 0.8 * 1.75 ** (4 - 2) = 2.45
    assert dry().penalties(tokens) == pytest.approx({4: 2.45})
    # with 5 a breaker only "3" counts (one token, under allowed_length): no penalty
    assert dry({5: ((),)}).penalties(tokens) == {}


def test_a_breaker_token_is_never_penalised_itself():
    tokens = [1, 2, 5, 7, 1, 2]
    assert dry().penalties(tokens) == pytest.approx({5: 0.8})
    assert dry({5: ((),)}).penalties(tokens) == {}


def test_a_breaker_of_several_tokens_breaks_only_when_complete():
    # 8 9 together form a breaker (head 8, tail 9), as a string split over two tokens
    tokens = [1, 2, 8, 9, 3, 1, 2, 8, 9, 3]
    # without it: "1 2 8 9 3" repeats, followed by 1: 0.8 * 1.75 ** 3 = 4.2875
    assert dry().penalties(tokens) == pytest.approx({1: 4.2875})
    assert dry({8: ((9,),)}).penalties(tokens) == {}
    # 8 followed by something else breaks nothing
    other = [1, 2, 8, 7, 3, 1, 2, 8, 7, 3]
    assert dry({8: ((9,),)}).penalties(other) == pytest.approx({1: 4.2875})


def test_dry_looks_only_at_the_last_n_tokens():
    tokens = [1, 2, 3, 4, 1, 2, 3]
    assert dry(last_n=-1).penalties(tokens) == pytest.approx({4: 1.4})
    assert dry(last_n=4).penalties(tokens) == {}  # 4 1 2 3: nothing repeats
    assert dry(last_n=6).penalties(tokens) == pytest.approx({4: 0.8})  # 2 3 4 1 2 3


def test_the_dry_penalty_stays_finite():
    # llama.cpp caps the exponent at log(FLT_MAX) / log(base): 88.72 / log 1.75 -> 158
    assert dry(multiplier=1.0).penalty(2 + 100) == pytest.approx(1.75**100)
    penalty = dry(multiplier=1.0).penalty(2 + 500)
    assert penalty == pytest.approx(1.75**158) and math.isfinite(penalty)


def test_dry_breakers_come_from_the_token_texts(tiny_model):
    tokenizer = tiny_model.tokenizer
    vocabulary = SamplerVocabulary(tokenizer)
    texts = vocabulary.token_texts()
    breakers = vocabulary.sequence_breakers(("\n", ":", '"', "*"))
    # every token whose text contains a breaker is one, by itself (an empty tail)
    containing = {t for t, text in enumerate(texts) if any(b in text for b in '\n:"*')}
    assert containing and set(breakers) == containing
    assert all(tails == ((),) for tails in breakers.values())
    # a token that ends with the start of a longer breaker is its head, the rest its tail
    the = tokenizer(" the", add_special_tokens=False)["input_ids"]
    assert len(the) == 1
    colon = tuple(tokenizer(":", add_special_tokens=False)["input_ids"])
    assert colon in vocabulary.sequence_breakers(("e:",))[the[0]]


# -- XTC -------------------------------------------------------------------------------------


def probabilities(scores: torch.Tensor) -> list[float]:
    return torch.softmax(scores, dim=-1)[0].tolist()


LOGITS = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))


def test_xtc_removes_the_top_choices_but_the_least_likely_of_them():
    # 0.4 and 0.3 reach 0.25: 0.4 goes, 0.3 stays: [0, .3, .2, .1] / .6
    out = ExcludeTopChoices(0.25, 1.0)(ids(0), LOGITS)
    assert probabilities(out) == pytest.approx([0, 0.5, 1 / 3, 1 / 6])
    # 0.4, 0.3 and 0.2 reach 0.15: only 0.2 stays among them: [0, 0, .2, .1] / .3
    out = ExcludeTopChoices(0.15, 1.0)(ids(0), LOGITS)
    assert probabilities(out) == pytest.approx([0, 0, 2 / 3, 1 / 3])


def test_xtc_does_nothing_with_fewer_than_two_top_choices():
    assert torch.equal(ExcludeTopChoices(0.35, 1.0)(ids(0), LOGITS), LOGITS)  # only 0.4
    assert torch.equal(ExcludeTopChoices(0.5, 1.0)(ids(0), LOGITS), LOGITS)  # none


def test_xtc_acts_with_its_probability_drawn_from_the_story_generator():
    def acts(seed: int) -> list[bool]:
        xtc = ExcludeTopChoices(0.25, 0.5, torch.Generator().manual_seed(seed))
        return [not torch.equal(xtc(ids(0), LOGITS), LOGITS) for _ in range(200)]

    assert acts(7) == acts(7), "the same seed excludes at the same steps"
    assert acts(7) != acts(8)
    assert 70 < sum(acts(7)) < 130
    never = ExcludeTopChoices(0.25, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(never(ids(0), LOGITS), LOGITS)


# -- the processor list ----------------------------------------------------------------------


def test_the_new_samplers_are_off_by_default_and_in_order():
    params = SamplingParams()
    processors, warpers = logits_processors(params, context_tokens=1, min_new_tokens=0, eos_ids=[0])
    names = [type(p).__name__ for p in [*processors, *warpers]]
    assert names == [
        "RepetitionPenaltyLogitsProcessor",
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
    ]
    from taleforge.generate.vocabulary import SamplerTokens

    every = SamplingParams(
        presence_penalty=0.5,
        no_repeat_ngram_size=3,
        dry_multiplier=0.8,
        min_p=0.05,
        xtc_probability=0.5,
    )
    processors, warpers = logits_processors(
        every,
        context_tokens=1,
        min_new_tokens=2,
        eos_ids=[0],
        sampler_tokens=SamplerTokens(bias={1: 1.0}),
    )
    names = [type(p).__name__ for p in [*processors, *warpers]]
    assert names == [
        "LogitBias",
        "RepetitionPenaltyLogitsProcessor",
        "PresenceFrequencyPenalty",
        "DRY",
        "NoRepeatNGramLogitsProcessor",
        "MinNewTokens",
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
        "MinPLogitsWarper",
        "ExcludeTopChoices",
    ]


# -- resolving words and token ids with the tokenizer --------------------------------------


def test_word_bias_biases_the_first_token_with_and_without_a_space(tiny_model):
    tokenizer = tiny_model.tokenizer

    def first(text: str) -> int:
        return tokenizer(text, add_special_tokens=False)["input_ids"][0]

    vocabulary = SamplerVocabulary(tokenizer)
    tokens = vocabulary.sampler_tokens(
        SamplingParams(word_bias={"castle": -5, "dragon": 2}, logit_bias={first(" castle"): -1})
    )
    assert first("castle") != first(" castle")
    assert tokens.bias == {
        first("castle"): -5.0,
        first(" castle"): -6.0,  # biases of one token add up
        first("dragon"): 2.0,
        first(" dragon"): 2.0,
    }


def test_a_token_id_outside_the_vocabulary_says_what_to_use(tiny_generator):
    size = len(tiny_generator.model.tokenizer)
    with pytest.raises(ConfigError, match=f"token id {size} is not in this model's vocabulary"):
        tiny_generator.make_request("a ship", logit_bias={size: 5})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"presence_penalty": 2.5}, "presence_penalty: Input should be less than or equal to 2"),
        ({"frequency_penalty": float("nan")}, "frequency_penalty: Input should be a finite"),
        ({"xtc_threshold": 0.6}, "xtc_threshold: Input should be less than or equal to 0.5"),
        ({"dry_base": 0.9}, "dry_base: Input should be greater than or equal to 1"),
        ({"dry_penalty_last_n": -2}, "dry_penalty_last_n: Input should be greater than or"),
        ({"logit_bias": {"7": 150}}, r"logit_bias.7: Input should be less than or equal to 100"),
        ({"word_bias": "suddenly=-5"}, r'not a JSON object: write it as e.g. {"suddenly": -5}'),
        ({"word_bias": {" ": -5}}, "word_bias needs words"),
        ({"dry_sequence_breakers": ["x" * 41]}, "must be 1 to 40 characters long"),
        ({"dry_multiplayer": 0.8}, "did you mean 'dry_multiplier'"),
    ],
)
def test_bad_values_say_what_to_change(options, message):
    from taleforge.config import make_sampling

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("{", r"\{")):
        make_sampling(**options)


def test_text_settings_come_as_json_from_the_command_line_and_the_environment():
    from taleforge.config import make_sampling

    params = make_sampling(
        word_bias='{"suddenly": -5}',
        logit_bias='{"50": 2}',
        dry_sequence_breakers='["\\n", ":"]',
    )
    assert params.word_bias == {"suddenly": -5.0} and params.logit_bias == {50: 2.0}
    assert params.dry_sequence_breakers == ("\n", ":")
    assert make_sampling(dry_sequence_breakers="*").dry_sequence_breakers == ("*",)


def test_min_new_tokens_masks_the_ends_as_transformers_does():
    import torch
    from transformers import MinNewTokensLengthLogitsProcessor

    from taleforge.generate.samplers import MinNewTokens

    scores = torch.randn(1, 300)
    ours, theirs = MinNewTokens(4, 3, [0, 7]), MinNewTokensLengthLogitsProcessor(4, 3, [0, 7])
    for length in range(4, 9):  # 0 to 4 new tokens
        ids = torch.arange(length)[None]
        expected = theirs(ids, scores)
        assert torch.equal(ours(ids, scores), expected)
        assert (expected[0, [0, 7]] == -math.inf).all() == (length - 4 < 3)
