"""StoryGenerator on a tiny random GPT-2: every mode and control, seeds, streaming, cancel."""

import threading
import time

import pytest

from taleforge import ConfigError, StoryGenerator
from taleforge.config import SamplingParams
from taleforge.generate.decoding import generation_config
from taleforge.generate.postprocess import finish_text
from taleforge.models import ModelMetadata, load_model, write_metadata

PROMPT = "The dragon slept beneath the castle"


def story(generator, prompt=PROMPT, **options):
    return generator.generate(prompt, **options).stories[0]


@pytest.mark.parametrize("mode", ["story", "writing-prompt", "continue", "poem", "dialogue"])
def test_every_text_mode_writes_something(tiny_generator, mode):
    result = story(tiny_generator, mode=mode, seed=1, max_new_tokens=12, min_new_tokens=12)
    assert result.mode == mode
    assert result.generated_tokens == 12
    assert result.text.strip()
    assert result.model == tiny_generator.model.spec
    for marker in ("[WP]", "[RESPONSE]", "<|endoftext|>"):
        assert marker not in result.text


def test_continue_mode_keeps_the_given_text(tiny_generator):
    result = story(
        tiny_generator,
        "Once upon a time a girl found a door.",
        mode="continue",
        seed=2,
        max_new_tokens=8,
        min_new_tokens=8,
        trim_to_sentence=False,
    )
    assert result.text.startswith("Once upon a time a girl found a door.")
    assert len(result.text) > len("Once upon a time a girl found a door.")


def test_chat_mode_needs_a_chat_template(tiny_generator):
    with pytest.raises(ConfigError, match="chat template"):
        story(tiny_generator, "hello", mode="chat")


def test_same_seed_same_story_and_seed_is_recorded(tiny_generator):
    first = story(tiny_generator, seed=1234, max_new_tokens=20)
    second = story(tiny_generator, seed=1234, max_new_tokens=20)
    other = story(tiny_generator, seed=4321, max_new_tokens=20)
    assert first.text == second.text and first.token_ids == second.token_ids
    assert first.token_ids != other.token_ids
    assert first.seed == 1234 and first.params.seed == 1234


def test_a_story_without_seed_records_the_one_it_used(tiny_generator):
    first = story(tiny_generator, max_new_tokens=15, min_new_tokens=15)
    again = story(tiny_generator, seed=first.seed, max_new_tokens=15, min_new_tokens=15)
    assert again.token_ids == first.token_ids


def test_greedy_is_deterministic_and_top_k_1_is_greedy(tiny_generator):
    greedy = story(tiny_generator, temperature=0, max_new_tokens=15, min_new_tokens=15)
    assert (
        story(tiny_generator, temperature=0, max_new_tokens=15, min_new_tokens=15).token_ids
        == greedy.token_ids
    )
    for seed in (1, 2, 3):
        top1 = story(
            tiny_generator,
            temperature=1.0,
            top_k=1,
            seed=seed,
            max_new_tokens=15,
            min_new_tokens=15,
            repetition_penalty=1.1,
        )
        assert top1.token_ids == greedy.token_ids


def test_no_repeat_ngram_size_forbids_repeated_ngrams(tiny_generator):
    looped = story(
        tiny_generator, temperature=0, repetition_penalty=1.0, max_new_tokens=40, min_new_tokens=40
    )
    bigrams = list(zip(looped.token_ids, looped.token_ids[1:], strict=False))
    assert len(set(bigrams)) < len(bigrams), "greedy decoding of a random model repeats"
    fixed = story(
        tiny_generator,
        temperature=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=2,
        max_new_tokens=40,
        min_new_tokens=40,
    )
    bigrams = list(zip(fixed.token_ids, fixed.token_ids[1:], strict=False))
    assert len(set(bigrams)) == len(bigrams)


def test_repetition_penalty_changes_greedy_output(tiny_generator):
    plain = story(
        tiny_generator, temperature=0, repetition_penalty=1.0, max_new_tokens=30, min_new_tokens=30
    )
    penalised = story(
        tiny_generator, temperature=0, repetition_penalty=2.5, max_new_tokens=30, min_new_tokens=30
    )
    assert len(set(penalised.token_ids)) > len(set(plain.token_ids))


def test_transformers_builds_no_processor_of_its_own():
    """``generate`` gets taleforge's processor list (the one llama.cpp samples with); its
    config must not add any, from our values or from its own defaults (top-k 50)."""
    params = SamplingParams(
        temperature=0.7,
        top_k=0,
        top_p=0.8,
        typical_p=0.9,
        min_p=0.05,
        repetition_penalty=1.3,
        no_repeat_ngram_size=3,
    )
    config = generation_config(params, max_new_tokens=9, pad_token_id=0, eos_token_id=1)
    assert config.do_sample and config.max_new_tokens == 9
    assert (config.temperature, config.top_k, config.top_p, config.typical_p) == (1.0, 0, 1.0, 1.0)
    assert (config.repetition_penalty, config.no_repeat_ngram_size) == (1.0, 0)
    assert config.min_p is None and not config.min_new_tokens
    greedy = generation_config(
        SamplingParams(temperature=0), max_new_tokens=1, pad_token_id=0, eos_token_id=1
    )
    assert not greedy.do_sample


def test_length_limits(tiny_generator):
    short = story(tiny_generator, seed=3, max_new_tokens=5)
    assert short.generated_tokens <= 5
    exact = story(tiny_generator, seed=3, max_new_tokens=25, min_new_tokens=25)
    assert exact.generated_tokens == 25 and exact.finish_reason == "length"


def test_stop_sequence_ends_the_story_before_it(tiny_generator):
    options = {
        "temperature": 0,
        "max_new_tokens": 30,
        "min_new_tokens": 30,
        "trim_to_sentence": False,
    }
    full = story(tiny_generator, **options)
    raw = tiny_generator.model.tokenizer.decode(list(full.token_ids), skip_special_tokens=True)
    stop = raw[len(raw) // 2 : len(raw) // 2 + 3]
    before = raw[: raw.index(stop)]
    chunks = []
    stream = tiny_generator.stream(PROMPT, stop=[stop], **{**options, "min_new_tokens": 0})
    chunks = [chunk.text for chunk in stream]
    stopped = stream.result.stories[0]
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.generated_text
    assert stopped.generated_tokens < full.generated_tokens
    assert stopped.generated_text == finish_text(before, stops=(), trim=False)[0]
    assert stop not in "".join(chunks), "a stop sequence never shows up in the stream"


def test_several_stories_with_consecutive_seeds(tiny_generator):
    result = tiny_generator.generate(
        PROMPT, num_stories=3, seed=50, max_new_tokens=10, min_new_tokens=10
    )
    assert [s.seed for s in result.stories] == [50, 51, 52]
    alone = story(tiny_generator, seed=51, max_new_tokens=10, min_new_tokens=10)
    assert result.stories[1].token_ids == alone.token_ids


def test_streamed_chunks_add_up_to_the_story(tiny_generator):
    stream = tiny_generator.stream(
        PROMPT, seed=9, max_new_tokens=30, min_new_tokens=30, trim_to_sentence=False
    )
    chunks = list(stream)
    assert len(chunks) > 3 and all(c.index == 0 for c in chunks)
    result = stream.result.stories[0]
    streamed = finish_text("".join(c.text for c in chunks), stops=(), trim=False)[0]
    assert streamed == result.generated_text
    assert result.time_to_first_token is not None and result.seconds > 0


def test_cancel_stops_within_a_second_and_frees_the_model(tiny_generator):
    stream = tiny_generator.stream(PROMPT, seed=1, max_new_tokens=16_000, min_new_tokens=16_000)
    first = next(iter(stream))
    assert first.text
    cancelled_at = time.perf_counter()
    stream.cancel()
    assert stream.wait(timeout=1.0), "generation thread still running 1 s after cancel"
    assert time.perf_counter() - cancelled_at < 1.0
    result = stream.result.stories[0]
    assert result.finish_reason == "cancelled" and result.generated_tokens < 16_000
    assert not [t for t in threading.enumerate() if t.name == "taleforge-generate"]
    # the model is free again
    assert story(tiny_generator, seed=1, max_new_tokens=3).generated_tokens <= 3


def test_leaving_a_with_block_cancels(tiny_generator):
    with tiny_generator.stream(PROMPT, max_new_tokens=16_000, min_new_tokens=16_000) as stream:
        next(iter(stream))
    assert stream.cancelled and stream.wait(timeout=1.0)


def test_long_story_slides_a_window_that_keeps_the_prompt(tiny_generator, monkeypatch):
    model = tiny_generator.model.model
    contexts = []
    original = model.generate

    def recording_generate(*args, **kwargs):
        contexts.append(kwargs["input_ids"][0].tolist())
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", recording_generate)
    window = tiny_generator.context_length
    assert window == 64
    result = story(
        tiny_generator, "A dragon", genre="fantasy", seed=5, max_new_tokens=200, min_new_tokens=200
    )
    assert result.generated_tokens == 200 > window
    assert result.window_shifts >= 1 and len(contexts) > 2
    header = tiny_generator.model.tokenizer("A fantasy story.\n\n")["input_ids"]
    for context in contexts:
        assert len(context) <= window
        assert context[: len(header)] == header


def test_memory_that_fills_the_window_is_refused(tiny_generator):
    with pytest.raises(ConfigError, match="shorten them"):
        story(tiny_generator, memory="The dragon slept. " * 40)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -5}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"num_stories": 100}, "num_stories"),
        ({"repetition_penalty": 10}, "repetition_penalty"),
        ({"mode": "novel"}, "unknown mode 'novel'"),
        ({"genre": "western"}, "unknown genre 'western'"),
        ({"temprature": 0.5}, "did you mean 'temperature'"),
    ],
)
def test_bad_parameters_are_rejected_with_a_clear_message(tiny_generator, options, message):
    with pytest.raises(ConfigError, match=message):
        story(tiny_generator, **options)


def test_empty_prompt_is_rejected(tiny_generator):
    with pytest.raises(ConfigError, match="prompt is empty"):
        tiny_generator.generate("   ")


def test_genre_auto_is_detected_and_recorded(tiny_generator):
    result = story(tiny_generator, "a wizard casts a spell", max_new_tokens=3)
    assert (result.genre, result.genre_source) == ("fantasy", "auto")
    assert result.formatted_prompt.startswith("A fantasy story.")


def test_trained_metadata_is_applied(tiny_model_dir, tmp_path):
    import shutil

    tagged_dir = tmp_path / "tagged-run"
    shutil.copytree(tiny_model_dir, tagged_dir)
    write_metadata(
        tagged_dir,
        ModelMetadata(name="tagged", template="genre_tagged", genre_tags=("fantasy", "horror")),
    )
    generator = StoryGenerator(load_model(str(tagged_dir)))
    result = story(generator, "The castle", genre="fantasy", max_new_tokens=3)
    assert result.formatted_prompt == "[FANTASY] The castle"
    result = story(generator, "A ship", genre="horror", mode="writing-prompt", max_new_tokens=3)
    assert result.formatted_prompt == "[HORROR] [WP] A ship [RESPONSE]"


def test_a_leading_genre_tag_is_the_genre_not_prompt_text(tiny_generator):
    tagged = story(tiny_generator, "[HORROR] The attic door", max_new_tokens=4)
    assert tagged.genre == "horror" and tagged.genre_source == "tag"
    assert tagged.formatted_prompt.count("HORROR") <= 1
    assert "The attic door" in tagged.formatted_prompt
    explicit = story(tiny_generator, "[HORROR] The attic door", genre="comedy", max_new_tokens=4)
    assert explicit.genre == "comedy"


@pytest.mark.parametrize(
    ("written", "story"),
    [
        # no sentence ends in the new part: kept whole, never cut back into the writer's text
        (" walked on and on", "The road was white. She walked on and on"),
        # a sentence ends in the new part: its unfinished tail is dropped
        (" walked on. The sea", "The road was white. She walked on."),
    ],
)
def test_trimming_a_continuation_never_cuts_the_writers_text(written, story):
    from taleforge.generate.generator import StoryRequest, story_texts
    from taleforge.generate.prompts import PromptPlan
    from taleforge.genres import GenreChoice

    opening = "The road was white. She"
    request = StoryRequest(
        prompt=opening,
        mode="continue",
        genre=None,
        params=SamplingParams(trim_to_sentence=True),
    )
    plan = PromptPlan(header="", opening=opening, chat=False, genre=GenreChoice(None, "none"))
    text = story_texts(written, request, plan, "length")[0]
    assert text == story
    assert text.startswith(opening)


@pytest.mark.parametrize(
    ("opening", "written", "trim", "story"),
    [
        # the writer's spacing, blank lines and tabs stay as typed
        ("Chapter  One\n\n\n\nThe road  was white.\tShe", " walked on.", True, None),
        # a character the tokenizer could not spell stays the writer's
        ("It cost 5\ufffd. She", " paid.", True, None),
        # the model finishes the writer's word: no space is put in
        ("The ro", "ad was white.", False, "The road was white."),
        # the model starts a new paragraph: it is kept
        ("The end.", "\n\n\nChapter two", False, "The end.\n\nChapter two"),
    ],
)
def test_a_continuation_keeps_the_writers_text_as_typed(opening, written, trim, story):
    from taleforge.generate.generator import StoryRequest, story_texts
    from taleforge.generate.prompts import PromptPlan
    from taleforge.genres import GenreChoice

    request = StoryRequest(
        prompt=opening, mode="continue", genre=None, params=SamplingParams(trim_to_sentence=trim)
    )
    plan = PromptPlan(header="", opening=opening, chat=False, genre=GenreChoice(None, "none"))
    text = story_texts(written, request, plan, "length")[0]
    assert text == (story if story is not None else opening + written)


def test_the_stream_never_shows_characters_the_story_drops(tiny_generator):
    # a model that writes control characters: the story drops them, and so must the
    # stream (a page that shows the stream showed them after the story was saved without)
    control = tiny_generator.model.tokenizer.encode("\x1a")[0]
    stream = tiny_generator.stream(
        "The road",
        mode="continue",
        temperature=0,
        max_new_tokens=8,
        min_new_tokens=8,
        logit_bias={control: 5.0},
        trim_to_sentence=False,
    )
    streamed = "".join(chunk.text for chunk in stream)
    story = stream.stories[0]
    assert control in story.token_ids  # the model did write one
    assert "\x1a" not in streamed
    assert streamed.strip() == story.generated_text.strip()
