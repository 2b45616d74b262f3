"""Every backend behaves the same for a writer: one suite, run on transformers and llama.cpp.

llama.cpp runs a float32 GGUF export of the tiny GPT-2, so its logits equal transformers'
up to rounding: greedy stories must be token for token the same on both backends.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter

import pytest

from needs import need_llama_cpp
from taleforge import ConfigError, StoryGenerator
from taleforge.config import SamplingParams
from taleforge.errors import ModelLoadError
from taleforge.generate.bans import PhraseBans
from taleforge.generate.postprocess import finish_text

PROMPT = "The dragon slept beneath the castle"
BACKENDS = ["transformers", "llama.cpp"]


@pytest.fixture(scope="module")
def llama_generator(tiny_model):
    need_llama_cpp()
    from taleforge.generate.backends import open_backend

    loaded, backend = open_backend(tiny_model, "llama.cpp", quantization="f32", parallel=4)
    generator = StoryGenerator(loaded, backend=backend)
    yield generator
    generator.close()


@pytest.fixture(params=BACKENDS)
def generator(request, tiny_generator):
    if request.param == "transformers":
        return tiny_generator
    return request.getfixturevalue("llama_generator")


def story(generator, prompt=PROMPT, **options):
    return generator.generate(prompt, **options).stories[0]


GREEDY = {"temperature": 0, "max_new_tokens": 30, "min_new_tokens": 30, "trim_to_sentence": False}


# -- the same behaviour on every backend ------------------------------------------------------


def test_the_story_records_its_backend(generator):
    assert story(generator, max_new_tokens=3).backend == generator.backend_name


def test_greedy_is_deterministic_and_top_k_1_top_p_min_p_narrow_to_greedy(generator):
    greedy = story(generator, **GREEDY)
    assert story(generator, **GREEDY).token_ids == greedy.token_ids
    narrow = [{"top_k": 1}, {"top_k": 0, "top_p": 0.001}, {"top_k": 0, "min_p": 0.999}]
    for seed, options in enumerate(narrow):
        sampled = story(generator, **{**GREEDY, "temperature": 1.0, "seed": seed, **options})
        assert sampled.token_ids == greedy.token_ids, options


def test_same_seed_same_story_other_seed_other_story(generator):
    options = {"max_new_tokens": 25, "min_new_tokens": 25, "temperature": 1.2}
    first = story(generator, seed=1234, **options)
    assert story(generator, seed=1234, **options).token_ids == first.token_ids
    assert story(generator, seed=4321, **options).token_ids != first.token_ids
    assert first.seed == 1234


def test_several_stories_have_consecutive_seeds(generator):
    options = {"max_new_tokens": 10, "min_new_tokens": 10}
    result = generator.generate(PROMPT, num_stories=3, seed=50, **options)
    assert [s.seed for s in result.stories] == [50, 51, 52]
    assert story(generator, seed=51, **options).token_ids == result.stories[1].token_ids


def test_top_k_0_samples_from_the_whole_vocabulary(generator):
    # transformers' generate used to fill top_k=0 with its own default, 50
    options = {"max_new_tokens": 1, "min_new_tokens": 1, "temperature": 5.0, "top_p": 1.0}
    firsts = {story(generator, seed=seed, top_k=0, **options).token_ids[0] for seed in range(150)}
    assert len(firsts) > 60


def test_length_limits(generator):
    assert story(generator, seed=3, max_new_tokens=5).generated_tokens <= 5
    exact = story(generator, seed=3, max_new_tokens=25, min_new_tokens=25)
    assert exact.generated_tokens == 25 and exact.finish_reason == "length"


def test_repetition_controls(generator):
    plain = story(generator, **{**GREEDY, "repetition_penalty": 1.0, "max_new_tokens": 40})
    bigrams = list(zip(plain.token_ids, plain.token_ids[1:], strict=False))
    assert len(set(bigrams)) < len(bigrams), "greedy decoding of a random model repeats"
    penalised = story(generator, **{**GREEDY, "repetition_penalty": 2.5})
    assert len(set(penalised.token_ids)) > len(set(plain.token_ids[:30]))
    banned = story(
        generator,
        **{**GREEDY, "repetition_penalty": 1.0, "no_repeat_ngram_size": 2, "max_new_tokens": 40},
    )
    bigrams = list(zip(banned.token_ids, banned.token_ids[1:], strict=False))
    assert len(set(bigrams)) == len(bigrams)


def test_stop_sequence_cuts_the_story_and_never_streams(generator):
    full = story(generator, **GREEDY)
    raw = generator.model.tokenizer.decode(list(full.token_ids), skip_special_tokens=True)
    stop = raw[len(raw) // 2 : len(raw) // 2 + 3]
    stream = generator.stream(PROMPT, stop=[stop], **{**GREEDY, "min_new_tokens": 0})
    streamed = "".join(chunk.text for chunk in stream)
    stopped = stream.result.stories[0]
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.generated_text and stop not in streamed
    assert stopped.generated_text == finish_text(raw[: raw.index(stop)], stops=(), trim=False)[0]


def test_streamed_chunks_add_up_to_the_story(generator):
    stream = generator.stream(PROMPT, seed=9, **{**GREEDY, "temperature": 0.9})
    chunks = list(stream)
    assert len(chunks) > 3
    result = stream.result.stories[0]
    assert finish_text("".join(c.text for c in chunks), stops=(), trim=False)[0] == (
        result.generated_text
    )


def test_cancel_stops_the_stream_promptly_and_frees_the_model(generator):
    stream = generator.stream(PROMPT, seed=1, max_new_tokens=16_000, min_new_tokens=16_000)
    assert next(iter(stream)).text
    cancelled_at = time.perf_counter()
    stream.cancel()
    assert stream.wait(timeout=1.0), "still generating 1 s after cancel"
    assert time.perf_counter() - cancelled_at < 1.0
    result = stream.result.stories[0]
    assert result.finish_reason == "cancelled" and result.generated_tokens < 16_000
    assert story(generator, seed=1, max_new_tokens=3).generated_tokens <= 3


def test_a_story_longer_than_the_window_keeps_going(generator):
    assert generator.context_length == 64
    result = story(generator, "A dragon", genre="fantasy", seed=5, max_new_tokens=200,
                   min_new_tokens=200)  # fmt: skip
    assert result.generated_tokens == 200 and result.window_shifts >= 1
    again = story(generator, "A dragon", genre="fantasy", seed=5, max_new_tokens=200,
                  min_new_tokens=200)  # fmt: skip
    assert again.token_ids == result.token_ids


def test_dry_stops_passages_repeating(generator):
    plain = story(generator, **{**GREEDY, "repetition_penalty": 1.0})
    assert repeated_trigrams(plain.token_ids, breakers=set()), "greedy decoding repeats"
    dry = story(generator, **{**GREEDY, "repetition_penalty": 1.0, "dry_multiplier": 5.0})
    breakers = set(generator.vocabulary.sequence_breakers(SamplingParams().dry_sequence_breakers))
    # extending a repeated pair costs 5 logits: only passages with a breaker repeat
    assert not repeated_trigrams(dry.token_ids, breakers)


def repeated_trigrams(tokens, breakers):
    trigrams = [
        t for t in zip(tokens, tokens[1:], tokens[2:], strict=False) if not set(t) & breakers
    ]
    return {t for t in trigrams if trigrams.count(t) > 1}


def test_presence_penalty_makes_greedy_decoding_use_new_tokens(generator):
    plain = story(generator, **{**GREEDY, "repetition_penalty": 1.0})
    present = story(generator, **{**GREEDY, "repetition_penalty": 1.0, "presence_penalty": 2.0})
    assert len(set(plain.token_ids)) < 10
    assert len(set(present.token_ids)) == len(present.token_ids) == 30


def test_logit_and_word_bias(generator):
    plain = story(generator, **GREEDY)
    banned = story(generator, **GREEDY, logit_bias={plain.token_ids[0]: -100})
    assert plain.token_ids[0] not in banned.token_ids
    castle = generator.vocabulary.word_tokens("castle")
    forced = story(generator, **GREEDY, word_bias={"castle": 100})
    assert set(forced.token_ids) <= castle


def test_xtc_is_random_and_the_seed_decides(generator):
    # after top-k 5 of a nearly flat distribution every candidate has p ~ 0.2 > 0.1:
    # XTC, when it acts, leaves only the least likely of them
    options = {"max_new_tokens": 25, "min_new_tokens": 25, "temperature": 1.0, "top_k": 5}
    xtc = {**options, "xtc_threshold": 0.1, "xtc_probability": 0.5}
    first = story(generator, seed=1234, **xtc)
    assert story(generator, seed=1234, **xtc).token_ids == first.token_ids
    assert story(generator, seed=4321, **xtc).token_ids != first.token_ids
    assert story(generator, seed=1234, **options).token_ids != first.token_ids


def test_a_memory_that_fills_the_window_is_refused(generator):
    with pytest.raises(ConfigError, match="shorten them"):
        story(generator, memory="The dragon slept. " * 40)


# -- the backends agree ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"repetition_penalty": 1.3},
        {"no_repeat_ngram_size": 3, "repetition_penalty": 1.0},
        {"min_new_tokens": 30, "max_new_tokens": 30},
        {"presence_penalty": 1.5, "frequency_penalty": 0.5, "repetition_penalty": 1.0},
        # longer than the 64-token window: tokens that left it still count
        {"frequency_penalty": 0.4, "max_new_tokens": 120, "min_new_tokens": 120},
        {"dry_multiplier": 2.0, "dry_allowed_length": 2, "repetition_penalty": 1.0},
        {"word_bias": {"castle": 0.05, "the": -0.05}, "logit_bias": {5: 0.05}},
    ],
    ids=[
        "greedy",
        "repetition-penalty",
        "no-repeat-ngram",
        "min-new-tokens",
        "presence-frequency",
        "frequency-past-the-window",
        "dry",
        "bias",
    ],
)
def test_greedy_stories_are_the_same_on_both_backends(tiny_generator, llama_generator, options):
    settings = {"temperature": 0, "max_new_tokens": 40, "trim_to_sentence": False, **options}
    reference = story(tiny_generator, **settings)
    assert story(llama_generator, **settings).token_ids == reference.token_ids


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(),
        SamplingParams(temperature=1.3, top_k=5, top_p=0.8),
        SamplingParams(temperature=0.7, top_k=40, min_p=0.05, typical_p=0.9),
        SamplingParams(temperature=0.9, top_k=0, top_p=0.9, typical_p=0.95),
    ],
    ids=["defaults", "top-k-top-p", "min-p-typical", "no-top-k"],
)
def test_the_sampling_distribution_is_the_one_transformers_samples_from(params):
    """llama.cpp's token chooser keeps only the top-k candidates before the later warpers;
    the probabilities must equal those of transformers' processors on the whole vocabulary."""
    import torch

    from taleforge.generate.sampling import logits_processors

    torch.manual_seed(0)
    logits = torch.randn(1, 500) * 4
    context = [3, 7, 7, 42]
    processors, warpers = logits_processors(
        params, context_tokens=len(context), min_new_tokens=0, eos_ids=[0]
    )
    ids = torch.tensor([context])
    expected = torch.softmax(warpers(ids, processors(ids, logits.clone())), dim=-1)[0]
    assert_chooser_samples(expected, params, context, logits)


def assert_chooser_samples(expected, params, context, logits, tokens=None, **chooser_options):
    """llama.cpp's token chooser for a step from ``context``, at ``tokens`` (default: the
    step's start), draws 4000 tokens: their frequencies must be ``expected``, and it never
    draws a token ``expected`` gives no chance."""
    import torch

    from taleforge.generate.sampling import TokenChooser

    rng = torch.Generator().manual_seed(1)
    chooser = TokenChooser(
        params, context, min_new_tokens=0, eos_ids=[0], rng=rng, **chooser_options
    )
    counts = torch.zeros(logits.shape[-1])
    for _ in range(4000):
        chooser.tokens = list(tokens or context)
        counts[chooser.choose(logits[0].clone())] += 1
    observed = counts / counts.sum()
    assert set(observed.nonzero().flatten().tolist()) <= set(expected.nonzero().flatten().tolist())
    assert torch.allclose(observed, expected, atol=0.03)


#: A context that repeats (3 7 42 ... 3 7 42: DRY penalises 9, which followed) and a bias.
REPEATING = [3, 7, 42, 9, 5, 11, 3, 7, 42]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.1, top_k=40, presence_penalty=1.0, frequency_penalty=0.7),
        SamplingParams(temperature=0.9, top_k=0, top_p=0.95, dry_multiplier=3.0),
        SamplingParams(temperature=1.0, top_k=20, xtc_threshold=0.05, xtc_probability=1.0),
        SamplingParams(
            temperature=0.8,
            top_k=40,
            min_p=0.02,
            repetition_penalty=1.2,
            presence_penalty=0.5,
            dry_multiplier=0.8,
            dry_allowed_length=1,
            xtc_threshold=0.1,
            xtc_probability=1.0,
        ),
    ],
    ids=["presence-frequency", "dry-no-top-k", "xtc-top-k", "all"],
)
def test_the_new_samplers_sample_the_same_distribution_on_llama_cpp(params):
    """With the new samplers on, llama.cpp's chooser (top-k candidates only) samples the
    distribution of the processor list the transformers backend hands to ``generate``."""
    import torch

    from taleforge.generate.sampling import logits_processors
    from taleforge.generate.vocabulary import SamplerTokens

    torch.manual_seed(0)
    logits = torch.randn(1, 500) * 3
    logits[0, 9] = logits.max() + 1  # the token DRY penalises is a likely one
    tokens = SamplerTokens(bias={11: 2.0, 12: -100.0}, sequence_breakers={5: ((),)})
    # the story generated 11 and 3 in an earlier window, and 42 in this one
    context, earlier = REPEATING[:-1], (11, 3)
    options = {"sampler_tokens": tokens, "earlier_tokens": earlier}
    processors, warpers = logits_processors(
        params, context_tokens=len(context), min_new_tokens=0, eos_ids=[0], **options
    )
    ids = torch.tensor([REPEATING])
    expected = torch.softmax(warpers(ids, processors(ids, logits.clone())), dim=-1)[0]
    assert expected[12] == 0
    # the chooser at the same place: the step began after ``context`` and chose 42
    assert_chooser_samples(expected, params, context, logits, tokens=REPEATING, **options)


def test_xtc_half_the_time_samples_the_mixture_on_llama_cpp():
    import torch

    from taleforge.generate.sampling import logits_processors

    torch.manual_seed(0)
    logits = torch.randn(1, 500) * 3
    xtc = SamplingParams(temperature=1.0, top_k=30, xtc_threshold=0.05, xtc_probability=0.5)
    always = xtc.model_copy(update={"xtc_probability": 1.0})
    never = xtc.model_copy(update={"xtc_probability": 0.0})

    def distribution(params: SamplingParams) -> torch.Tensor:
        processors, warpers = logits_processors(
            params, context_tokens=1, min_new_tokens=0, eos_ids=[0]
        )
        ids = torch.tensor([[3]])
        return torch.softmax(warpers(ids, processors(ids, logits.clone())), dim=-1)[0]

    expected = 0.5 * distribution(always) + 0.5 * distribution(never)
    assert not torch.allclose(distribution(always), distribution(never), atol=0.1)
    assert_chooser_samples(expected, xtc, [3], logits)


# -- concurrency on llama.cpp ------------------------------------------------------------------


def test_concurrent_stories_are_written_together_and_fairly(llama_generator):
    options = {"max_new_tokens": 150, "min_new_tokens": 150, "trim_to_sentence": False}
    alone = [story(llama_generator, seed=seed, **options).token_ids for seed in range(4)]
    # a seed gives the same story every time it is written alone
    assert [story(llama_generator, seed=seed, **options).token_ids for seed in range(4)] == alone
    first_token: dict[int, float] = {}
    finished: dict[int, float] = {}
    results: dict[int, tuple[int, ...]] = {}

    def write(seed: int) -> None:
        stream = llama_generator.stream(PROMPT, seed=seed, **options)
        for _ in stream:
            first_token.setdefault(seed, time.perf_counter())
        finished[seed] = time.perf_counter()
        results[seed] = stream.result.stories[0].token_ids

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # Written in one batch (a step computes the four stories' tokens together, whose float
    # sums round a little differently from a story alone, so a story may part from its solo
    # version after a while, as on vLLM): each whole, and each its own story.
    assert sorted(results) == [0, 1, 2, 3]
    assert all(len(tokens) == 150 for tokens in results.values())
    assert len({tokens for tokens in results.values()}) == 4
    # Fair sharing: every writer saw text before any story was finished.
    assert max(first_token.values()) < min(finished.values())


# -- choosing a backend, bad input -------------------------------------------------------------


def test_an_unknown_backend_says_which_exist(tiny_model):
    with pytest.raises(ConfigError, match="unknown backend 'vllm': use one of auto"):
        StoryGenerator(tiny_model, backend="vllm")


def test_without_llama_cpp_auto_falls_back_with_a_reason_and_llama_cpp_is_refused(
    tiny_model_dir, monkeypatch, caplog
):
    from taleforge.generate.backends import llama

    monkeypatch.setattr(llama, "llama_cpp_missing", lambda: "llama-cpp-python is not installed")
    with caplog.at_level(logging.INFO, logger="taleforge"):
        generator = StoryGenerator(str(tiny_model_dir), backend="auto")
    assert generator.backend_name == "transformers"
    assert "llama-cpp-python is not installed" in caplog.text
    with pytest.raises(ConfigError, match="not installed.*--backend transformers"):
        StoryGenerator(str(tiny_model_dir), backend="llama.cpp")


def test_auto_picks_llama_cpp_when_it_can(tiny_model_dir):
    need_llama_cpp()
    generator = StoryGenerator(str(tiny_model_dir), backend="auto")
    try:
        assert generator.backend_name == "llama.cpp"
        assert generator.model.model is None, "the PyTorch weights are not kept in memory"
        assert story(generator, seed=1, max_new_tokens=5).generated_tokens <= 5
    finally:
        generator.close()


def test_a_corrupt_gguf_file_is_a_clear_error(tmp_path):
    need_llama_cpp()
    from taleforge.generate.backends.llama import LlamaCppBackend

    broken = tmp_path / "model.q8_0.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(300))
    with pytest.raises(ModelLoadError, match="not a readable GGUF file.*export again"):
        LlamaCppBackend(broken)


def test_the_backend_flag_of_generate(tiny_model_dir):
    import json
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "taleforge", "generate", "a ship", "--model"]
        return subprocess.run(
            [*command, str(tiny_model_dir), "--max-new-tokens", "4", "--seed", "1", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = run("--backend", "transformers", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stories"][0]["backend"] == "transformers"
    bad = run("--backend", "vllm")
    assert bad.returncode == 2 and "invalid choice: 'vllm'" in bad.stderr


def test_places_go_to_waiters_first_come_first_served():
    import threading
    import time

    from taleforge.generate.backends.base import Places

    places = Places(1)
    held = places.take()
    served: list[int] = []
    given_up = threading.Event()

    def writer(n: int, cancel: threading.Event | None = None) -> None:
        place = places.take(cancel)
        if place is None:
            return
        served.append(n)
        time.sleep(0.01)
        places.give(place)

    threads = []
    for n in range(6):
        cancel = given_up if n == 2 else None  # writer 2 leaves the line before its turn
        threads.append(threading.Thread(target=writer, args=(n, cancel)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while places.waiting < n + 1:  # in line before the next one comes
            assert time.monotonic() < deadline
            time.sleep(0.001)
    given_up.set()
    deadline = time.monotonic() + 10
    while places.waiting > 5:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert held is not None
    places.give(held)
    for thread in threads:
        thread.join(timeout=10)
    assert served == [0, 1, 3, 4, 5]


# -- banned phrases -----------------------------------------------------------------------------


def test_banned_phrases_never_appear_in_the_streamed_or_the_final_text(generator):
    """40 stories with the words this model writes most banned: not one of them in what was
    streamed or in the story, and the stories that had one were written on differently."""
    options = {"max_new_tokens": 32, "trim_to_sentence": False, "temperature": 1.0}
    free = [story(generator, seed=seed, **options).generated_text for seed in range(40)]
    counts = Counter(w for text in free for w in set(re.findall(r"[a-z]{3,}", text.lower())))
    banned = sorted(counts, key=lambda word: (-counts[word], word))[:6]  # ties: by word
    bans = PhraseBans(banned)
    assert sum(bans.find(text, final=True) is not None for text in free) >= 10, banned
    changed = 0
    for seed in range(40):
        stream = generator.stream(PROMPT, seed=seed, banned_phrases=banned, **options)
        streamed = "".join(chunk.text for chunk in stream)
        written = stream.result.stories[0].generated_text
        assert bans.find(streamed, final=True) is None, (seed, banned, streamed)
        assert bans.find(written, final=True) is None, (seed, banned, written)
        assert finish_text(streamed, stops=(), trim=False)[0] == written
        changed += written != free[seed]
    assert changed >= 10


def test_the_alternatives_to_a_word_are_the_models_next_tokens(generator):
    # the likeliest alternative is the token greedy decoding writes there, on every backend
    choices = generator.alternatives(PROMPT, top=5, mode="continue")
    assert len(choices) == 5
    probabilities = [c.probability for c in choices]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1.0001
    first = story(
        generator, mode="continue", **{**GREEDY, "max_new_tokens": 1, "min_new_tokens": 1}
    )
    assert first.token_ids[0] == choices[0].token_id


def test_the_alternatives_agree_on_both_backends(tiny_generator, llama_generator):
    ours = tiny_generator.alternatives(PROMPT, top=5, mode="continue")
    theirs = llama_generator.alternatives(PROMPT, top=5, mode="continue")
    assert [c.token_id for c in ours] == [c.token_id for c in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-3)
