"""Templates, special tokens, loss masking, packing vs padding and split stability."""

from taleforge.config import DataConfig
from taleforge.data.records import Record
from taleforge.data.templates import render, special_tokens
from taleforge.data.tokenize import IGNORE_INDEX, assign_splits, split_of, tokenize_splits
from taleforge.models import load_tokenizer

FANTASY = Record("The dragon woke.", prompt="A dragon sleeps too long", genre="fantasy")
UNTAGGED = Record("The ship sailed.")


def test_templates():
    assert render(FANTASY, "plain", True)[:2] == ("", "The dragon woke.")
    assert render(FANTASY, "genre_tagged", True)[:2] == ("[FANTASY] ", "The dragon woke.")
    assert render(FANTASY, "genre_tagged", False)[:2] == ("", "The dragon woke.")
    assert render(FANTASY, "writing_prompt", True)[:2] == (
        "[FANTASY] [WP] A dragon sleeps too long [RESPONSE] ",
        "The dragon woke.",
    )
    assert render(FANTASY, "writing_prompt", False)[:2] == (
        "[WP] A dragon sleeps too long [RESPONSE] ",
        "The dragon woke.",
    )
    # no prompt: falls back to the genre tag alone
    assert render(UNTAGGED, "writing_prompt", True)[:2] == ("", "The ship sailed.")


def test_special_tokens_follow_the_template():
    records = [FANTASY, Record("x", genre="horror"), UNTAGGED]
    assert special_tokens(records, "writing_prompt", True) == [
        "[WP]",
        "[RESPONSE]",
        "[FANTASY]",
        "[HORROR]",
    ]
    assert special_tokens(records, "plain", True) == []
    assert special_tokens(records, "genre_tagged", False) == []


def test_split_is_a_pure_function_of_the_content():
    config = DataConfig(validation_fraction=0.2, test_fraction=0.2)
    texts = [f"Story number {i} about a lighthouse and the sea." for i in range(400)]
    splits = {t: split_of(t, config) for t in texts}
    counts = {
        name: sum(1 for s in splits.values() if s == name)
        for name in ("train", "validation", "test")
    }
    assert 180 <= counts["train"] <= 300 and counts["validation"] > 40 and counts["test"] > 40
    # re-running, shuffling, adding data or changing case/spacing never moves a text
    records = [Record(t) for t in reversed(texts)] + [Record("A new story entirely.")]
    for name, rows in assign_splits(records, config).items():
        for row in rows:
            if row.text in splits:
                assert splits[row.text] == name
    assert split_of("The  SEA was calm.", config) == split_of("the sea was calm.", config)
    # a different salt gives a different (but again stable) assignment
    salted = DataConfig(validation_fraction=0.2, test_fraction=0.2, split_salt="other")
    assert any(split_of(t, salted) != splits[t] for t in texts)


def _tokenized(tiny_model_dir, **options):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.add_tokens(["[WP]", "[RESPONSE]", "[FANTASY]"], special_tokens=True)
    config = DataConfig(**options)
    pairs = [render(FANTASY, "writing_prompt", True), ("", "The keeper lit the lamp. " * 20)]
    dataset, stats = tokenize_splits({"train": pairs}, tokenizer, config)
    return tokenizer, dataset["train"], stats["train"]


def test_packing_makes_full_blocks(tiny_model_dir):
    tokenizer, rows, stats = _tokenized(tiny_model_dir, packing="pack", block_size=16)
    assert stats["rows"] == stats["tokens"] // 16 and len(rows) == stats["rows"]
    assert all(len(r) == 16 for r in rows["input_ids"])
    assert all(sum(mask) == 16 for mask in rows["attention_mask"])
    flat = [t for r in rows["input_ids"] for t in r]
    # documents are separated by EOS inside the packed stream
    assert tokenizer.eos_token_id in flat
    assert tokenizer.convert_tokens_to_ids("[WP]") in flat[:4]  # one token, not "[", "WP", ...


def test_padding_is_the_seed_recipe(tiny_model_dir):
    tokenizer, rows, stats = _tokenized(tiny_model_dir, packing="pad", max_length=40)
    assert len(rows) == 2 and all(len(r) == 40 for r in rows["input_ids"])
    short = rows[0]
    real = sum(short["attention_mask"])
    assert real < 40
    assert short["input_ids"][real - 1] == tokenizer.eos_token_id  # the text's own EOS ...
    assert short["labels"][real - 1] == tokenizer.eos_token_id  # ... is learned
    assert short["input_ids"][real:] == [tokenizer.eos_token_id] * (40 - real)  # pad = EOS
    assert short["labels"][real:] == [IGNORE_INDEX] * (40 - real)  # padding is not
    assert stats["truncated_texts"] == 1  # the long one was cut to max_length


def test_loss_on_story_only_masks_the_prompt(tiny_model_dir):
    tokenizer, rows, _ = _tokenized(
        tiny_model_dir, packing="pad", max_length=64, loss_on_story_only=True
    )
    first = rows[0]
    prefix_len = len(
        tokenizer(render(FANTASY, "writing_prompt", True)[0], add_special_tokens=False)["input_ids"]
    )
    assert first["labels"][:prefix_len] == [IGNORE_INDEX] * prefix_len
    assert first["labels"][prefix_len] == first["input_ids"][prefix_len]
    _, unmasked, _ = _tokenized(tiny_model_dir, packing="pad", max_length=64)
    assert unmasked[0]["labels"][:prefix_len] == unmasked[0]["input_ids"][:prefix_len]
