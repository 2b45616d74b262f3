"""Shared fixtures: a tiny GPT-2 with a byte-level BPE tokenizer trained here, built once.

Tests run offline: the Hugging Face hub is switched to offline mode before anything imports
it, and the taleforge cache is the user's (so the embedded model is converted once).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

TRAINING_TEXT = [
    "The dragon slept beneath the castle while the wizard read his spells by candlelight.",
    "A robot on the space station counted the stars and sent a message to the planet below.",
    "The detective found a clue in the locked room: a single wet footprint by the window.",
    "They met at the harbour at dawn, and she laughed when the wind stole his hat.",
    "Nobody went into the basement after the whispers started, not even the old cat.",
    "The map led the explorers across the desert, over the mountain and into the jungle.",
    "Once upon a time a girl found a door in the sea. She opened it and walked inside!",
    '"Who is there?" asked the keeper. No one answered, so he lit the lamp again.',
]

EOS = "<|endoftext|>"


def build_tiny_gpt2(directory: Path, *, n_positions: int = 64, seed: int = 0) -> Path:
    """Write a random tiny GPT-2 and a trained byte-level BPE tokenizer to ``directory``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        TRAINING_TEXT * 4, vocab_size=400, min_frequency=1, special_tokens=[EOS]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS
    )
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a tiny GPT-2 (64-token context) and its tokenizer."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from taleforge.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_generator(tiny_model):
    from taleforge import StoryGenerator

    return StoryGenerator(tiny_model)


@pytest.fixture(scope="session")
def embedded_generator():
    """The real embedded model (converted once into the taleforge cache)."""
    from taleforge import StoryGenerator

    return StoryGenerator("smollm2-135m")
