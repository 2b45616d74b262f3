"""GGUF export: the exported model writes what the transformers model writes, and is cached."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from needs import need_llama_cpp
from taleforge import StoryGenerator
from taleforge.models import load_model
from taleforge.models.export import ExportError, export_gguf, find_export, read_gguf_info

GREEDY = {"temperature": 0, "max_new_tokens": 40, "trim_to_sentence": False, "mode": "continue"}
TEXT = (
    "The dragon slept beneath the castle while the wizard read his spells by candlelight. "
    "A robot on the space station counted the stars and sent a message to the planet below."
)


@pytest.fixture
def model_dir(tmp_path, tiny_model_dir):
    """A private copy of the tiny GPT-2 (exports are written next to it)."""
    import shutil

    target = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, target)
    return target


def greedy_tokens(generator: StoryGenerator) -> tuple[int, ...]:
    return generator.generate("The dragon slept", **GREEDY).stories[0].token_ids


def on_llama(spec: str, path: Path) -> StoryGenerator:
    from taleforge.generate.backends.llama import LlamaCppBackend
    from taleforge.models.loading import load_without_weights

    backend = LlamaCppBackend(path)
    return StoryGenerator(load_without_weights(spec, backend.context_length), backend=backend)


def perplexity(generator: StoryGenerator, text: str) -> float:
    import torch

    ids = generator.model.tokenizer(text)["input_ids"][: generator.context_length]
    if generator.backend_name == "llama.cpp":
        scores = generator.backend.token_logprobs(ids)
    else:
        with torch.inference_mode():
            logits = generator.model.model(torch.tensor([ids])).logits[0, :-1]
        scores = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])
        scores = scores.flatten().tolist()
    return math.exp(-sum(scores) / len(scores))


def test_an_f32_export_writes_the_same_greedy_story(model_dir):
    need_llama_cpp()
    result = export_gguf(str(model_dir), quantization="f32")
    assert result.path.parent == model_dir and not result.cached
    reference = StoryGenerator(load_model(str(model_dir)))
    exported = on_llama(str(model_dir), result.path)
    assert greedy_tokens(exported) == greedy_tokens(reference)


def test_a_q8_export_keeps_perplexity_within_2_percent(model_dir):
    need_llama_cpp()
    result = export_gguf(str(model_dir))
    assert result.path.name == "model.q8_0.gguf"
    reference = perplexity(StoryGenerator(load_model(str(model_dir))), TEXT)
    exported = perplexity(on_llama(str(model_dir), result.path), TEXT)
    assert abs(exported / reference - 1) < 0.02, (exported, reference)


def test_a_lora_run_is_exported_with_its_adapter_merged(tmp_path, tiny_model_dir):
    need_llama_cpp()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    model = get_peft_model(base, config)
    torch.manual_seed(3)
    with torch.no_grad():  # a trained adapter: B is not zero, so it changes the output
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    adapter_dir = tmp_path / "run" / "model"
    model.save_pretrained(adapter_dir)
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(tiny_model_dir)
    (adapter_dir / "adapter_config.json").write_text(json.dumps(adapter_config))

    result = export_gguf(str(adapter_dir), quantization="f32")
    reference = StoryGenerator(load_model(str(adapter_dir)))
    assert greedy_tokens(on_llama(str(adapter_dir), result.path)) == greedy_tokens(reference)
    assert greedy_tokens(reference) != greedy_tokens(
        StoryGenerator(load_model(str(tiny_model_dir)))
    )


def test_exports_are_cached_and_made_again_when_the_model_changes(model_dir):
    first = export_gguf(str(model_dir), quantization="f32")
    made = first.path.stat().st_mtime_ns
    again = export_gguf(str(model_dir), quantization="f32")
    assert again.cached and again.path.stat().st_mtime_ns == made
    assert find_export(str(model_dir), "f32") == first.path
    weights = model_dir / "model.safetensors"
    os.utime(weights, ns=(made + 10**9, made + 10**9))  # a re-trained run
    assert find_export(str(model_dir), "f32") is None
    assert not export_gguf(str(model_dir), quantization="f32").cached
    leftovers = [p.name for p in model_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "no half-written file is left behind"


def test_a_corrupt_export_is_detected_and_replaced(model_dir):
    path = export_gguf(str(model_dir), quantization="f32").path
    path.write_bytes(path.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.raises(Exception, match="not a readable GGUF file"):
        read_gguf_info(path)
    assert find_export(str(model_dir), "f32") is None
    remade = export_gguf(str(model_dir), quantization="f32")
    assert not remade.cached and read_gguf_info(remade.path)["tensors"] > 0


def test_an_unsupported_architecture_says_what_to_do(tmp_path, tiny_model_dir, caplog):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tiny_model_dir))
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    neox_dir = tmp_path / "neox"
    GPTNeoXForCausalLM(config).save_pretrained(neox_dir)
    tokenizer.save_pretrained(neox_dir)
    with pytest.raises(ExportError, match="'gpt_neox' is not one.*--backend transformers"):
        export_gguf(str(neox_dir))
    with caplog.at_level("INFO", logger="taleforge"):
        generator = StoryGenerator(str(neox_dir), backend="auto")
    assert generator.backend_name == "transformers"
    assert "gpt_neox" in caplog.text or "llama-cpp-python is not installed" in caplog.text
    assert generator.generate("a story", max_new_tokens=3).stories[0].generated_tokens <= 3


def test_unknown_quantization_is_refused(model_dir):
    with pytest.raises(ExportError, match="unknown GGUF quantization 'q3'.*q8_0"):
        export_gguf(str(model_dir), quantization="q3")


def test_the_export_command(model_dir):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "taleforge", "export", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = run("--format", "gguf", "--model", str(model_dir), "--quantization", "f32")
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path.is_file() and path.name == "model.f32.gguf"
    again = run("--model", str(model_dir), "--quantization", "f32")
    assert again.returncode == 0 and "up to date" in again.stderr
    missing = run("--model", str(model_dir / "nope"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad = run("--format", "onnx", "--model", str(model_dir))
    assert bad.returncode == 2 and "invalid choice: 'onnx'" in bad.stderr


@pytest.mark.integration
def test_the_default_story_model_exports_within_2_percent_perplexity():
    need_llama_cpp()
    result = export_gguf("taleforge-stories")
    text = Path(__file__).resolve().parents[2] / "data" / "sample" / "stories.csv"
    sample = text.read_text(encoding="utf-8")[:3000]
    reference = perplexity(StoryGenerator(load_model("taleforge-stories")), sample)
    exported = perplexity(on_llama("taleforge-stories", result.path), sample)
    assert abs(exported / reference - 1) < 0.02, (exported, reference)


@pytest.mark.integration
def test_llama_cpps_own_tokenizer_splits_the_export_as_taleforge_does():
    """Other llama.cpp tools (llama-server, llama-cli) tokenize text with the GGUF's own
    vocabulary and pre-tokenizer: contractions and numbers must come out as taleforge's."""
    need_llama_cpp()
    import llama_cpp

    from taleforge.models import load_tokenizer

    path = export_gguf("taleforge-stories").path
    text = "She didn't know; we'll see. In 1999 they paid $12,345.67 for 3 rooms.\nIt's 10:45."
    expected = load_tokenizer("taleforge-stories")(text, add_special_tokens=False)["input_ids"]
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    assert vocab.tokenize(text.encode(), add_bos=False, special=False) == list(expected)
