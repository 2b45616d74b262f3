"""Which lorebook entries a text brings in: keys, case, whole words, regexes, the budget."""

import time

import pytest

from taleforge import ConfigError
from taleforge.generate.lore import SCAN_TIMEOUT, Lorebook, LoreEntry, as_lorebook


def words(text: str) -> int:
    """A stand-in tokenizer: one token a word."""
    return len(text.split())


def book(*entries: LoreEntry, **options) -> Lorebook:
    return Lorebook(entries=entries, **options)


MIRA = LoreEntry(keys=("Mira",), text="Mira is a one-eyed smuggler.", name="Mira")
ANN = LoreEntry(keys=("Ann",), text="Ann keeps the lighthouse.")


def inserted(lorebook: Lorebook, text: str) -> list[str]:
    return [entry.text for entry in lorebook.triggered(text, words).entries]


def test_a_key_in_the_text_brings_its_entry_in_and_an_absent_one_does_not():
    lorebook = book(MIRA, ANN)
    assert inserted(lorebook, "Then Mira opened the door.") == [MIRA.text]
    assert inserted(lorebook, "Nobody opened the door.") == []


def test_keys_ignore_case_unless_the_entry_says_otherwise():
    assert inserted(book(MIRA), "then MIRA laughed") == [MIRA.text]
    strict = MIRA.model_copy(update={"case_sensitive": True})
    assert inserted(book(strict), "then MIRA laughed") == []
    assert inserted(book(strict), "then Mira laughed") == [MIRA.text]


def test_plain_keys_match_whole_words_only():
    assert inserted(book(ANN), "The Annual fair began.") == []
    assert inserted(book(ANN), "Ann's lamp.") == [ANN.text]


def test_a_regex_key():
    entry = LoreEntry(keys=(r"harbou?r\s+master",), text="The harbour master is owed.", regex=True)
    assert inserted(book(entry), "the Harbor  Master waited") == [entry.text]
    assert inserted(book(entry), "the harbour was empty") == []


def test_a_disabled_entry_is_never_inserted():
    assert inserted(book(MIRA.model_copy(update={"enabled": False})), "Mira") == []


def test_the_budget_takes_entries_in_order_and_names_the_skipped():
    long = LoreEntry(keys=("door",), text="The door is old and made of oak.", name="the door")
    short = LoreEntry(keys=("Ann",), text="Ann.")
    lorebook = book(MIRA, long, short, budget=6)  # Mira takes 5 of the 6 words
    selection = lorebook.triggered("Mira and Ann at the door", words)
    assert selection.texts == (MIRA.text, short.text)
    assert selection.skipped == ("the door",)
    unnamed = book(MIRA, long.model_copy(update={"name": ""}), budget=6)
    assert unnamed.triggered("Mira, door", words).skipped == ("door",)  # its first key


def test_only_the_scanned_tail_counts():
    text = "Mira left the harbour. " + "The sea was calm. " * 20
    assert inserted(book(MIRA, scan_chars=100), text) == []
    assert inserted(book(MIRA, scan_chars=len(text)), text) == [MIRA.text]


def test_a_key_that_backtracks_catastrophically_counts_as_no_match_and_is_quick():
    slow = LoreEntry(keys=(r"(a|aa)+$",), text="never", regex=True)
    lorebook = book(*[slow] * 30, MIRA, scan_chars=10_000)
    started = time.monotonic()
    inserted_texts = inserted(lorebook, "Mira " + "a" * 60 + "!")
    assert time.monotonic() - started < SCAN_TIMEOUT + 0.5
    assert "never" not in inserted_texts


def test_bad_lorebooks_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"lorebook\.entries\[0\].*not a regular expression"):
        as_lorebook({"entries": [{"keys": ["(unclosed"], "text": "x", "regex": True}]})
    with pytest.raises(ConfigError, match=r"lorebook\.budget"):
        as_lorebook({"budget": -1})
    assert as_lorebook(None) is None
    assert as_lorebook({"entries": [{"keys": ["Mira"], "text": "x"}]}).entries[0].keys == ("Mira",)
