"""Fine-tuning on the tiny GPT-2: learning, early stopping, outputs, MLflow, bad configs."""

import json
from pathlib import Path

import pytest

from taleforge import ConfigError, StoryGenerator, load_model
from taleforge.config import load_config
from taleforge.train import train


def test_loss_goes_down_and_the_model_writes(make_config, tmp_path):
    result = train(make_config("learn", max_steps=30))
    assert result.global_step == 30 and not result.stopped_early
    assert result.test_loss_after < result.test_loss_before - 0.3
    assert result.perplexity_after < result.perplexity_before
    model_dir = result.model_dir
    metadata = json.loads((model_dir / "taleforge.json").read_text())
    assert metadata["template"] == "writing_prompt"
    assert "fantasy" in metadata["genre_tags"] and "[WP]" in metadata["special_tokens"]
    assert metadata["data_fingerprint"] and metadata["evaluation"]["test_loss_after"]
    assert metadata["config"]["train"]["max_steps"] == 30
    assert (result.run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # loadable with no extra flags, and it formats prompts the way it was trained
    story = (
        StoryGenerator(load_model(str(model_dir)))
        .generate("a wizard", genre="fantasy", max_new_tokens=5)
        .stories[0]
    )
    assert story.formatted_prompt == "[FANTASY] [WP] a wizard [RESPONSE]"


def test_a_finished_run_is_not_repeated(make_config, tmp_path):
    config = make_config("once", max_steps=5, tracking=False)
    first = train(config)
    again = train(config)
    assert again.already_done and again.global_step == first.global_step == 5
    forced = train(config, force=True)
    assert not forced.already_done and forced.global_step == 5


def test_early_stopping_on_a_plateau(make_config, tmp_path):
    config = make_config(
        "plateau",
        learning_rate=1e-12,
        max_steps=200,
        eval_steps=2,
        save_steps=2,
        early_stopping_patience=2,
        early_stopping_threshold=0.01,
        tracking=False,
    )
    result = train(config)
    assert result.stopped_early
    assert result.global_step <= 8  # first evaluation, then two without improvement


def test_lora_adapter_with_new_tokens_is_small_and_loads(make_config, tmp_path):
    config = make_config(
        "lora", method="lora", max_steps=6, tracking=False, lora_target_modules=("c_attn",)
    )
    result = train(config)
    adapter = result.model_dir
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").exists()
    base_size = (Path(config.model.spec) / "model.safetensors").stat().st_size
    assert (adapter / "adapter_model.safetensors").stat().st_size < base_size / 2
    loaded = load_model(str(adapter))
    assert loaded.kind.value == "adapter"
    assert len(loaded.tokenizer) > 400  # the marker tokens came along
    # it writes (a tiny model's 4 tokens may decode to whitespace, so count the tokens)
    generator = StoryGenerator(loaded)
    written = generator.generate("a ghost", max_new_tokens=4, min_new_tokens=4).stories[0]
    assert written.generated_tokens == 4

    merged = train(
        make_config(
            "merged",
            method="lora",
            max_steps=2,
            tracking=False,
            merge_lora=True,
            lora_target_modules=("c_attn",),
        )
    )
    assert (merged.model_dir / "config.json").is_file()
    assert load_model(str(merged.model_dir)).kind.value == "local"


def test_mlflow_run_holds_params_metrics_artifacts_and_model(make_config, tmp_path):
    from mlflow.tracking import MlflowClient

    result = train(make_config("tracked"))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.learning_rate"] == "0.003"
    assert run.data.params["data.template"] == "writing_prompt"
    for metric in (
        "loss",
        "eval_loss",
        "eval_perplexity",
        "test_loss_before",
        "test_loss_after",
        "test_perplexity_after",
    ):
        assert metric in run.data.metrics, metric
    history = client.get_metric_history(run.info.run_id, "eval_loss")
    assert [m.step for m in history] == [5, 10, 15, 20]

    def artifacts(path=""):
        found = []
        for item in client.list_artifacts(run.info.run_id, path):
            found += artifacts(item.path) if item.is_dir else [item.path]
        return found

    files = artifacts()
    for expected in (
        "config.json",
        "data/card.md",
        "data/lengths.png",
        "loss.png",
        "summary.json",
        "samples/step-000005.md",
        "samples/step-000020.md",
    ):
        assert expected in files, expected
    sample = client.download_artifacts(run.info.run_id, "samples/step-000020.md", str(tmp_path))
    assert "## The dragon" in Path(sample).read_text()
    versions = client.search_model_versions(f"name='{result.run_dir.name}'")
    assert versions and versions[0].run_id == run.info.run_id


def test_bad_training_config_is_explained():
    with pytest.raises(ConfigError, match=r"save_steps \(15\) must be a multiple of eval_steps"):
        load_config(overrides={"train.save_steps": 15, "train.eval_steps": 10})
    with pytest.raises(ConfigError, match="train.learning_rate"):
        load_config(overrides={"train.learning_rate": -1})
    with pytest.raises(ConfigError, match="train.method"):
        load_config(overrides={"train.method": "qlora"})


def test_lora_on_modules_the_model_lacks(make_config, tmp_path):
    config = make_config("bad", method="lora", lora_target_modules=("q_proj",), tracking=False)
    with pytest.raises(ConfigError, match="lora-target-modules"):
        train(config)
