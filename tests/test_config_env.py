"""Configuration by environment: ``TALEFORGE_<SECTION>__<KEY>`` and ``TALEFORGE_CONFIG``, as a
container is configured, validated like command-line values and named in every error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taleforge.cli import main
from taleforge.config import load_config
from taleforge.errors import ConfigError


def test_variables_set_any_setting_with_the_types_of_the_command_line():
    config = load_config(
        environ={
            "TALEFORGE_SERVE__PORT": "8000",
            "TALEFORGE_SERVE__ACCOUNTS": "true",
            "TALEFORGE_SERVE__RATE_LIMIT_GENERATE": "3/minute",
            "TALEFORGE_MODEL__SPEC": "gpt2",
            "TALEFORGE_MODEL__BACKEND": "transformers",
            "TALEFORGE_SAMPLING__TOP_P": "0.5",
            "TALEFORGE_GENERATE__CONTEXT_LENGTH": "128",
        }
    )
    assert config.serve.port == 8000
    assert config.serve.accounts is True
    assert config.serve.rate_limit_generate == "3/minute"
    assert config.model.spec == "gpt2" and config.model.backend == "transformers"
    assert config.sampling.top_p == 0.5
    assert config.generate.context_length == 128
    # The same strings given as --set give the same config.
    from_flags = load_config(
        overrides=[
            ("serve.port", "8000"),
            ("serve.accounts", "true"),
            ("serve.rate_limit_generate", "3/minute"),
            ("model.spec", "gpt2"),
            ("model.backend", "transformers"),
            ("sampling.top_p", "0.5"),
            ("generate.context_length", "128"),
        ],
        environ={},
    )
    assert from_flags == config


def test_the_plain_variables_are_not_settings_and_change_nothing():
    plain = {
        "TALEFORGE_DATABASE_URL": "postgresql://u:p@db/taleforge",
        "TALEFORGE_REDIS_URL": "redis://redis:6379/0",
        "TALEFORGE_SECRET_KEY": "x" * 40,
        "TALEFORGE_CACHE": "/tmp/cache",
        "TALEFORGE_TEST_POSTGRES_URL": "postgresql://u:p@db/test",
        "TALEFORGE_REMOTE_API_KEY": "sk-test",
    }
    assert load_config(environ=plain) == load_config(environ={})


def test_layers_defaults_preset_environment_command_line(tmp_path: Path):
    preset = tmp_path / "site.toml"
    preset.write_text("[serve]\nport = 9000\nmax_waiting = 3\ncache_size = 7\n")
    environ = {
        "TALEFORGE_CONFIG": str(preset),
        "TALEFORGE_SERVE__MAX_WAITING": "20",
        "TALEFORGE_SERVE__CACHE_SIZE": "99",
    }
    config = load_config(overrides={"serve.cache-size": "5"}, environ=environ)
    assert config.serve.port == 9000  # the preset named by TALEFORGE_CONFIG
    assert config.serve.max_waiting == 20  # the environment over the preset
    assert config.serve.cache_size == 5  # the command line over the environment
    assert config.serve.max_loaded_models == 2  # the default where nothing says otherwise
    # --config on the command line wins over TALEFORGE_CONFIG.
    other = tmp_path / "other.toml"
    other.write_text("[serve]\nport = 9100\n")
    assert load_config(other, environ=environ).serve.port == 9100


def test_a_misspelt_variable_is_an_error_that_names_it_and_the_right_one():
    with pytest.raises(
        ConfigError, match=r"TALEFORGE_SERVE__PROT.*did you mean TALEFORGE_SERVE__PORT"
    ):
        load_config(environ={"TALEFORGE_SERVE__PROT": "8000"})
    with pytest.raises(
        ConfigError, match=r"TALEFORGE_SERV__PORT.*did you mean TALEFORGE_SERVE__PORT"
    ):
        load_config(environ={"TALEFORGE_SERV__PORT": "8000"})
    with pytest.raises(ConfigError, match=r"TALEFORGE_CONFIG: config preset 'nowhere' not found"):
        load_config(environ={"TALEFORGE_CONFIG": "nowhere"})


def test_a_bad_value_names_the_variable_unless_the_command_line_replaces_it():
    environ = {"TALEFORGE_SERVE__PORT": "eighty", "TALEFORGE_SERVE__ACCOUNTS": "maybe"}
    with pytest.raises(ConfigError) as error:
        load_config(environ=environ)
    message = str(error.value)
    assert "serve.port" in message and "(set with TALEFORGE_SERVE__PORT)" in message
    assert "'eighty'" in message and "(set with TALEFORGE_SERVE__ACCOUNTS)" in message
    with pytest.raises(ConfigError, match=r"rate limit.*TALEFORGE_SERVE__RATE_LIMIT_LOGIN"):
        load_config(environ={"TALEFORGE_SERVE__RATE_LIMIT_LOGIN": "lots"})
    # The command line's value is the one used, so the variable's is never read.
    config = load_config(
        overrides={"serve.port": "8001", "serve.accounts": "false"},
        flags={"serve.port": "--serve.port", "serve.accounts": "--serve.accounts"},
        environ=environ,
    )
    assert config.serve.port == 8001 and config.serve.accounts is False


def test_list_settings_take_a_json_array_or_one_item_and_empty_means_unset():
    config = load_config(
        environ={
            "TALEFORGE_SERVE__MODELS": '["gpt2", "distilgpt2"]',
            "TALEFORGE_SAMPLING__STOP": "THE END",
            "TALEFORGE_SERVE__HOST": "",
        }
    )
    assert config.serve.models == ("gpt2", "distilgpt2")
    assert config.sampling.stop == ("THE END",)
    assert config.serve.host == "127.0.0.1"  # empty: as if unset
    with pytest.raises(ConfigError, match=r"TALEFORGE_SERVE__MODELS: not a JSON array"):
        load_config(environ={"TALEFORGE_SERVE__MODELS": '["gpt2",'})


def test_the_command_reads_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("TALEFORGE_SERVE__PORT", "8123")
    monkeypatch.setenv("TALEFORGE_SAMPLING__TEMPERATURE", "0.3")
    assert main(["config", "--set", "sampling.temperature=0.4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["serve"]["port"] == 8123
    assert printed["sampling"]["temperature"] == 0.4
    monkeypatch.setenv("TALEFORGE_SERVE__PORTT", "1")
    assert main(["config"]) == 2
    error = capsys.readouterr().err
    assert "TALEFORGE_SERVE__PORTT" in error and "Traceback" not in error
