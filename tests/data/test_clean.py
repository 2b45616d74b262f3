"""Every cleaning rule, switched on and off, and the counts the data card shows."""

import pytest

from taleforge.config import DataConfig
from taleforge.data.clean import (
    clean_records,
    content_key,
    fix_unicode,
    fix_writingprompts,
    letter_ratio,
    normalize_whitespace,
    remove_control_chars,
    strip_html,
)
from taleforge.data.records import Record

STORY = (
    "The lighthouse keeper climbed the stairs every night for forty years, and every night "
    "the sea answered him with the same slow song against the rocks below the tower."
)
OTHER = (
    "A robot in the orchard learned the names of every apple tree, then wrote each one a "
    "letter, folded it twice, and hung it from the lowest branch before the frost came."
)


def test_html_tags_and_entities():
    assert strip_html("<p>Hello&nbsp;<b>world</b> &amp; friends</p><p>Next</p>") == (
        "Hello\u00a0world & friends\nNext\n"
    )
    assert strip_html("no markup, 3 < 4") == "no markup, 3 < 4"


def test_mojibake_is_repaired_and_unicode_normalized():
    assert fix_unicode("cafÃ© and naÃ¯ve") == "café and naïve"
    assert fix_unicode("cafe\u0301") == "café"  # NFC


def test_control_characters_are_removed():
    assert remove_control_chars("bell\x07 and\x00 null\x1b") == "bell and null"


def test_whitespace_and_line_breaks():
    assert normalize_whitespace("  one\t two  \r\n\r\n\r\n\r\nthree \n") == "one two\n\nthree"


def test_writingprompts_markers_and_tokenization_are_undone():
    text = "I do n't know . <newline> <newline> `` Run ! '' she said , and we ran ."
    assert fix_writingprompts(text) == 'I don\'t know.\n\n"Run!" she said, and we ran.'


def test_letter_ratio_tells_prose_from_noise():
    assert letter_ratio(STORY) > 0.9
    assert letter_ratio("| 1 | 2 | 3 |\n| 4 | 5 | 6 |") < 0.2
    assert letter_ratio("") == 0.0


def test_filters_and_counts():
    records = [
        Record(STORY, source="a:1"),
        Record("   ", source="a:2"),
        Record("Too short.", source="a:3"),
        Record("1234 5678 !!!! ???? " * 10, source="a:4"),
        Record(" ".join([STORY] * 40), source="a:5"),
    ]
    kept, report = clean_records(records, DataConfig(min_words=10, max_words=500))
    assert [r.source for r in kept] == ["a:1"]
    assert report.removed == {"empty": 1, "too_short": 1, "not_language": 1, "too_long": 1}
    assert report.examples["too_short"] == "a:3"


def test_exact_and_near_duplicates_keep_the_first():
    long_story = " ".join(
        [STORY, OTHER, STORY.replace("keeper", "warden"), OTHER.replace("robot", "girl")]
    )
    near = long_story.replace("forty", "fifty", 1)
    records = [
        Record(long_story, source="1"),
        Record(long_story.upper() + "  ", source="2"),
        Record(near, source="3"),
        Record(OTHER, source="4"),
    ]
    kept, report = clean_records(records, DataConfig(min_words=5))
    assert [r.source for r in kept] == ["1", "4"]
    assert report.removed == {"duplicate": 1, "near_duplicate": 1}
    assert content_key(STORY) == content_key(STORY.upper())
    # switched off, the near duplicate stays
    kept, _ = clean_records(records, DataConfig(min_words=5, dedup_near=False))
    assert [r.source for r in kept] == ["1", "3", "4"]


@pytest.mark.parametrize(
    ("switch", "raw", "survives"),
    [
        ("fix_html", "<i>The sea</i> was calm that night and nobody slept.", "<i>"),
        ("fix_control_chars", "The sea\x07 was calm that night and nobody slept.", "\x07"),
        ("fix_whitespace", "The sea   was calm that night and nobody slept.", "   "),
        ("fix_unicode", "The cafÃ© was calm that night and nobody slept.", "Ã©"),
        ("fix_writingprompts", "The sea was calm . <newline> Nobody slept , really .", "<newline>"),
    ],
)
def test_every_fixer_can_be_switched_off(switch, raw, survives):
    on, report_on = clean_records([Record(raw)], DataConfig(min_words=3))
    off, _ = clean_records([Record(raw)], DataConfig(min_words=3, **{switch: False}))
    assert survives not in on[0].text and report_on.changed
    assert survives in off[0].text


def test_every_filter_can_be_switched_off():
    records = [Record("Short one."), Record("Short one."), Record("1 2 3 4 5 6 7 8 9 0")]
    config = DataConfig(
        min_words=0, max_words=0, min_letter_ratio=0, dedup_exact=False, dedup_near=False
    )
    kept, report = clean_records(records, config)
    assert len(kept) == 3 and not report.removed


def test_prompts_are_cleaned_too():
    record = Record(STORY, prompt="<b>[WP]</b> A keeper , a lamp .")
    kept, _ = clean_records([record], DataConfig())
    assert kept[0].prompt == "[WP] A keeper, a lamp."
