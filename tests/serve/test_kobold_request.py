"""Translating KoboldAI request bodies to taleforge's sampling (pure: no server, no model)."""

from __future__ import annotations

import re

import pytest
from pydantic import create_model

from taleforge.config import SamplingParams
from taleforge.serve.kobold_request import (
    FIELDS,
    KoboldRequestError,
    fit_prompt,
    translate_request,
)

BASE = SamplingParams()


def translate(body: dict, **options):
    settings = {"base": BASE, "window": 2048, "limit": 1024, **options}
    return translate_request({"prompt": "Once upon a time", **body}, **settings)


def warned(request) -> set[str]:
    """The Kobold field each warning names (its first word)."""
    return {re.match(r"\w+", warning).group() for warning in request.warnings}


def test_sampling_fields_map_to_taleforge_names_and_validate_there():
    request = translate(
        {
            "temperature": 0.7,
            "top_k": 40,
            "top_p": 0.9,
            "typical": 0.95,
            "min_p": 0.05,
            "rep_pen": 1.1,
            "max_length": 80,
            "stop_sequence": ["\nYou:"],
            "sampler_seed": 7,
        }
    )
    assert request.sampling == {
        "temperature": 0.7, "top_k": 40, "top_p": 0.9, "typical_p": 0.95, "min_p": 0.05,
        "repetition_penalty": 1.1, "max_new_tokens": 80, "stop": ["\nYou:"], "seed": 7,
    }  # fmt: skip
    assert request.params.typical_p == 0.95 and request.params.stop == ("\nYou:",)
    assert request.warnings == ()


def test_every_table_target_is_a_sampling_field_or_named_in_warnings():
    for name, rule in FIELDS.items():
        if rule.target is None or rule.target in SamplingParams.model_fields:
            continue
        assert rule.off is not None or rule.switch is not None, name
        switch_on = {rule.switch: 1} if rule.switch else {}
        value = 0.5 if rule.off != [] else ["a phrase"]
        assert name in warned(translate({name: value, **switch_on})), name


def test_fields_picked_up_as_soon_as_sampling_params_has_them():
    poorer = create_model(  # SamplingParams before DRY and XTC
        "Poorer",
        **{
            name: (info.annotation, info)
            for name, info in SamplingParams.model_fields.items()
            if not name.startswith(("dry_", "xtc_"))
        },
    )
    body = {"dry_multiplier": 0.8, "dry_base": 1.75, "xtc_probability": 0.5, "xtc_threshold": 0.1}
    assert {"dry_multiplier", "dry_base", "xtc_probability"} <= warned(
        translate(body, params_model=poorer)
    )
    today = translate(body)
    assert today.sampling == body and not warned(today)
    with pytest.raises(KoboldRequestError, match="'dry_base'.*greater than or equal to 1"):
        translate({"dry_base": 0.5})


@pytest.mark.parametrize(
    ("field", "off", "on"),
    [
        ("top_a", 0, 0.2),
        ("tfs", 1, 0.9),
        ("mirostat", 0, 2),
        ("trim_stop", True, False),
        ("grammar", "", 'root ::= "x"'),
        ("bypass_eos", False, True),
        ("use_world_info", False, True),
        ("smoothing_factor", 0, 0.3),
        ("dynatemp_range", 0, 0.5),
        ("images", [], ["aGk="]),
    ],
)
def test_a_field_without_counterpart_is_fine_off_and_named_on(field, off, on):
    assert warned(translate({field: off})) == set()
    assert warned(translate({field: on})) == {field}


def test_fields_switched_by_another_matter_only_when_it_is_on():
    assert warned(translate({"mirostat": 0, "mirostat_tau": 5, "mirostat_eta": 0.1})) == set()
    assert warned(translate({"mirostat": 2, "mirostat_tau": 5})) == {"mirostat", "mirostat_tau"}
    assert "xtc_threshold" not in warned(translate({"xtc_threshold": 0.1}))


def test_unknown_fields_are_named_with_a_suggestion():
    (warning,) = translate({"temp": 0}).warnings
    assert warning.startswith("temp ignored") and "did you mean 'temperature'" in warning


def test_seed_minus_one_is_a_fresh_seed_and_singleline_a_newline_stop():
    assert "seed" not in translate({"sampler_seed": -1}).sampling
    request = translate({"singleline": True, "stop_sequence": ["\nYou:"]})
    assert request.params.stop == ("\nYou:", "\n")


def test_ban_eos_writes_to_the_length_asked():
    request = translate({"use_default_badwordsids": True, "max_length": 60})
    assert request.params.min_new_tokens == request.params.max_new_tokens == 60
    default = translate({"use_default_badwordsids": True})
    assert default.params.min_new_tokens == BASE.max_new_tokens


def test_repetition_range_and_slope():
    whole = {"rep_pen": 1.1, "rep_pen_range": 0, "rep_pen_slope": 0.7}
    assert warned(translate(whole)) == set(), "0: the whole context, as KoboldAI United reads it"
    assert warned(translate({**whole, "rep_pen_range": 4096})) == {"rep_pen_slope"}
    assert warned(translate({**whole, "rep_pen_range": 256, "rep_pen_slope": 1})) == {
        "rep_pen_range"
    }
    assert warned(translate({**whole, "rep_pen": 1, "rep_pen_range": 256})) == set(), "off"


@pytest.mark.parametrize(
    ("body", "followed"),
    [
        ({"temperature": 0.7, "top_p": 0.9}, False),  # KoboldCpp's default: temperature last
        ({"temperature": 0.7, "top_k": 40}, True),  # temperature keeps the top-k ranking
        ({"temperature": 1.0, "top_p": 0.9, "rep_pen": 1.1}, True),  # temperature 1: no-op
        ({"temperature": 0, "top_p": 0.9}, True),  # greedy keeps the likeliest token anyway
        ({"temperature": 0.7, "rep_pen": 1.1, "top_k": 40}, True),
    ],
)
def test_sampler_order_is_checked_against_what_is_switched_on(body, followed):
    # Every sampler off but those in ``body`` (the server's own defaults switch some on).
    body = {"temperature": 1, "top_k": 0, "top_p": 1, "min_p": 0, "rep_pen": 1, **body}
    request = translate({**body, "sampler_order": [6, 0, 1, 3, 4, 2, 5]})
    assert ("sampler_order" not in warned(request)) is followed
    taleforge_order = translate({**body, "sampler_order": [6, 5, 0, 1, 4, 3, 2]})
    assert "sampler_order" not in warned(taleforge_order)


def test_temperature_commutes_with_the_penalty_unless_a_presence_penalty_subtracts():
    body = {"temperature": 0.7, "top_k": 0, "top_p": 1, "rep_pen": 1.1}
    temperature_first = [5, 6, 0, 1, 2, 3, 4]
    assert warned(translate({**body, "sampler_order": temperature_first})) == set()
    presence = {**body, "presence_penalty": 0.5, "sampler_order": temperature_first}
    assert "sampler_order" in warned(translate(presence))


def test_a_sampler_left_out_of_the_order_is_named():
    request = translate({"temperature": 0.7, "sampler_order": [6, 0, 1, 3, 4, 2]})
    assert any("leaves out temperature" in warning for warning in request.warnings)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"typical": 0}, ["'typical'", "greater than 0"]),
        ({"temperature": -1}, ["'temperature'", "greater than or equal to 0"]),
        ({"temperature": float("nan")}, ["'temperature'", "finite"]),
        ({"top_k": "many"}, ["'top_k'", "integer"]),
        ({"max_length": 5000}, ["'max_length' 5000", "limit of 1024"]),
        ({"stop_sequence": [""]}, ["'stop_sequence'", "empty"]),
        ({"sampler_order": "6,0,1"}, ["'sampler_order'", "list"]),
        ({"use_default_badwordsids": "yes"}, ["'use_default_badwordsids'", "true or false"]),
        ({"max_context_length": 30, "max_length": 40}, ["'max_context_length' (30)"]),
        ({"prompt": None}, ["'prompt' is required"]),
        ({"prompt": 3}, ["'prompt' must be a string"]),
        ({"genkey": 12}, ["'genkey'"]),
        ({"rep_pen": 1.1, "rep_pen_range": 10**400}, ["'rep_pen_range' must be a number"]),
    ],
)
def test_bad_values_are_refused_in_the_kobold_name(body, words):
    with pytest.raises(KoboldRequestError) as caught:
        translate(body)
    for word in words:
        assert word in str(caught.value)
    assert "typical_p" not in str(caught.value) and "function-after" not in str(caught.value)


def test_a_stream_carries_one_story():
    assert translate({"n": 3}).params.num_stories == 3
    streamed = translate({"n": 3}, stream=True)
    assert streamed.params.num_stories == 1 and warned(streamed) == {"n"}


def test_fit_prompt_keeps_the_end_that_fits(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    prompt = "The first line.\nThe second line.\nThe last line, which matters most."
    assert fit_prompt(prompt, tokenizer, 1000) == prompt
    cut = fit_prompt(prompt, tokenizer, 8)
    assert prompt.endswith(cut) and len(tokenizer(cut)["input_ids"]) <= 8
