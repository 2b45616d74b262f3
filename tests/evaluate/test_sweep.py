"""Decoding sweeps: every combination, validated, with messages that say what to fix."""

import pytest

from taleforge import ConfigError, SamplingParams
from taleforge.evaluate.sweep import parse_sweep, sweep_points


def test_every_combination_is_a_point_on_top_of_the_base():
    base = SamplingParams(top_k=40, max_new_tokens=50)
    points = sweep_points(base, ["temperature=0.7,0.9,1.1", "top-p=0.9,0.95"])
    assert [p.label for p in points] == [
        "temperature=0.7 top_p=0.9",
        "temperature=0.7 top_p=0.95",
        "temperature=0.9 top_p=0.9",
        "temperature=0.9 top_p=0.95",
        "temperature=1.1 top_p=0.9",
        "temperature=1.1 top_p=0.95",
    ]
    assert points[5].params.temperature == 1.1 and points[5].params.top_p == 0.95
    assert {p.params.top_k for p in points} == {40}  # the rest comes from the base
    assert sweep_points(base, []) == []


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["temperature"], "name=value,value"),
        (["temperature="], "name=value,value"),
        (["temperature=0.7", "temperature=0.9"], "twice"),
        (["temprature=0.7"], "did you mean 'temperature'"),
        (["temperature=9"], "less than or equal to 5"),
        (["top_p=lots"], "top_p"),
    ],
)
def test_bad_sweeps_say_what_to_change(specs, message):
    with pytest.raises(ConfigError, match=message):
        sweep_points(SamplingParams(), specs)


def test_parse_sweep_keeps_values_as_typed():
    assert parse_sweep(["top_k=0, 40"]) == [("top_k", ["0", "40"])]
