from pathlib import Path

import pytest

from taleforge.config import SamplingParams, load_config, make_sampling, parse_override
from taleforge.errors import ConfigError


def test_defaults_work_on_a_laptop():
    config = load_config()
    assert config.model.spec == "taleforge-stories"
    assert config.model.dtype == "float32"
    assert config.generate.mode == "story"
    assert 0 < config.sampling.temperature <= 1.5


def test_preset_then_dotted_overrides_win(tmp_path: Path):
    preset = tmp_path / "mine.toml"
    preset.write_text('[sampling]\ntemperature = 1.2\ntop_k = 10\n[model]\nspec = "gpt2"\n')
    config = load_config(preset, {"sampling.top-k": "40", "generate.mode": "poem"})
    assert config.sampling.temperature == 1.2
    assert config.sampling.top_k == 40  # CLI strings are coerced, dashes accepted
    assert config.model.spec == "gpt2"
    assert config.generate.mode == "poem"


def test_shipped_presets_are_valid():
    presets = sorted(Path("configs").glob("*.toml"))
    assert presets, "configs/ ships presets"
    for preset in presets:
        load_config(preset.stem)


def test_unknown_key_suggests_the_right_one(tmp_path: Path):
    preset = tmp_path / "typo.toml"
    preset.write_text("[sampling]\ntemprature = 0.7\n")
    with pytest.raises(
        ConfigError,
        match=r"sampling.temprature: unknown setting; did you mean "
        r"'temperature'",
    ):
        load_config(preset)


def test_out_of_range_names_the_flag_to_change():
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"sampling.top_p": "1.5"}, flags={"sampling.top_p": "--top-p"})
    message = str(info.value)
    assert "sampling.top_p" in message and "--top-p" in message and "1.5" in message


def test_min_above_max_is_explained():
    with pytest.raises(ConfigError, match="min_new_tokens .* larger than max_new_tokens"):
        make_sampling(max_new_tokens=10, min_new_tokens=20)


def test_unknown_sampling_name_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        make_sampling(temprature=0.5)


def test_single_stop_string_becomes_a_tuple_and_empty_is_rejected():
    assert SamplingParams(stop="THE END").stop == ("THE END",)
    with pytest.raises(ValueError, match="empty"):
        SamplingParams(stop=("",))


def test_params_are_frozen():
    params = SamplingParams()
    with pytest.raises(ValueError):
        params.temperature = 2.0  # type: ignore[misc]


def test_missing_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="not found.*default"):
        load_config("no-such-preset")


def test_broken_toml_names_the_file(tmp_path: Path):
    preset = tmp_path / "broken.toml"
    preset.write_text("[sampling\n")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load_config(preset)


def test_override_syntax():
    assert parse_override("sampling.top_k=5") == ("sampling.top_k", "5")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("top_k")
