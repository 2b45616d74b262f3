"""Model specs: resolution, offline hub ids, local directories, adapters, corrupt files."""

import json
import shutil
from pathlib import Path

import pytest

from taleforge import ModelLoadError, ModelNotFoundError, StoryGenerator
from taleforge.models import SourceKind, list_models, load_model, resolve_spec


def test_specs_resolve_to_their_kind(tiny_model_dir: Path):
    assert resolve_spec("smollm2-135m").kind is SourceKind.EMBEDDED
    assert resolve_spec("embedded").kind is SourceKind.EMBEDDED
    story = resolve_spec("default")
    assert (story.spec, story.kind) == ("taleforge-stories", SourceKind.ADAPTER)
    assert story.path is not None and (story.path / "adapter_config.json").is_file()
    assert resolve_spec("gpt2").kind is SourceKind.HUB
    assert resolve_spec("openai-community/gpt2-medium").kind is SourceKind.HUB
    local = resolve_spec(str(tiny_model_dir))
    assert local.kind is SourceKind.LOCAL and local.path == tiny_model_dir.resolve()


@pytest.mark.parametrize("spec", ["./no/such/dir", "/nowhere/model", "not a model!", "a/b/c"])
def test_unknown_specs_say_what_to_use(spec: str):
    with pytest.raises(ModelNotFoundError, match="smollm2-135m.*gpt2"):
        resolve_spec(spec)


def test_directory_without_a_model(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="holds no model"):
        load_model(str(tmp_path))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("offline_flag", [True, False])
def test_uncached_hub_model_offline_fails_fast_with_a_fix(monkeypatch, offline_flag):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline_flag)
    if not offline_flag:
        # Without the offline flag the hub is probed once; this machine has no route to it.
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelNotFoundError) as info:
        load_model("distilgpt2")
    message = str(info.value)
    assert "distilgpt2" in message and "HF_HOME" in message and "--model" in message
    assert "Traceback" not in message and len(message.splitlines()) == 1


def test_local_directory_loads_and_generates(tiny_model_dir: Path):
    loaded = load_model(str(tiny_model_dir))
    assert loaded.kind is SourceKind.LOCAL
    assert loaded.metadata.template == "plain"  # no chat template, no taleforge.json
    assert loaded.tokenizer.pad_token is not None
    assert loaded.context_length == 64


def test_corrupt_weights_give_a_clear_error(tiny_model_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x00not safetensors at all")
    with pytest.raises(ModelLoadError, match="incomplete or corrupt"):
        load_model(str(broken))


def test_corrupt_metadata_is_named(tiny_model_dir: Path, tmp_path: Path):
    broken = tmp_path / "bad-meta"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "taleforge.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="taleforge.json is corrupt"):
        load_model(str(broken))


def test_lora_adapter_directory_loads_on_its_base(tiny_model_dir: Path, tmp_path: Path):
    from peft import LoraConfig, get_peft_model

    base = load_model(str(tiny_model_dir))
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False, fan_in_fan_out=True
    )
    peft_model = get_peft_model(base.model, lora)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    peft_model.unload()  # leave the shared base as it was

    adapted = load_model(str(adapter_dir))
    assert adapted.kind is SourceKind.ADAPTER
    assert StoryGenerator(adapted).generate("The dragon", max_new_tokens=5).stories[0].text
    import torch

    ids = adapted.tokenizer("The dragon slept", return_tensors="pt")["input_ids"]
    plain = load_model(str(tiny_model_dir))
    with torch.no_grad():
        delta = (adapted.model(ids).logits - plain.model(ids).logits).abs().max().item()
    assert delta > 1e-4, "the adapter's weights take effect"


def test_listing_shows_embedded_and_runs(tiny_model_dir: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_model_dir, runs / "my-run")
    entries = {e.spec: e for e in list_models(runs)}
    assert entries["smollm2-135m"].kind == "embedded"
    assert entries["smollm2-135m"].size_bytes > 50_000_000
    run = entries[str(runs / "my-run")]
    assert run.kind == "local" and run.size_bytes > 10_000 and run.status == "ready"
