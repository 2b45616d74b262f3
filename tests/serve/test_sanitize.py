"""Text cleaning: one line-break style, no control characters or lone surrogates, NFC, limits."""

from __future__ import annotations

import json
import unicodedata

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from taleforge.serve.sanitize import TextTooLong, check_length, clean_request, clean_text

#: Any code point, surrogates and controls included (JSON can carry all of them).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)


@given(any_text)
@example("a\r\nb\rc\x00d\x1b[31me\x7f\x85\ud800\udfff")
@example("e\u0301 Å \ufb01")
def test_cleaned_text_is_normal_and_safe_to_store(text):
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned, "cleaning twice changes nothing"
    assert cleaned.encode("utf-8").decode("utf-8") == cleaned, "every character encodes"
    assert unicodedata.is_normalized("NFC", cleaned)
    assert "\r" not in cleaned
    assert all(c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs") for c in cleaned)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\n\t")))
def test_ordinary_text_is_left_as_it_is(text):
    assert clean_text(text) == text


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("one\r\ntwo\rthree\n", "one\ntwo\nthree\n"),
        ("tab\tstays", "tab\tstays"),
        ("bell\x07 and \x1b[31mred\x1b[0m", "bell and [31mred[0m"),
        ("cafe\u0301", "café"),
        ("lone \ud83d surrogate", "lone  surrogate"),
        ("emoji \U0001f409 and zero\u200bwidth stay", "emoji \U0001f409 and zero\u200bwidth stay"),
    ],
)
def test_examples(text, cleaned):
    assert clean_text(text) == cleaned


def test_too_long_says_what_to_change():
    check_length("x" * 100, 100, "prompt")
    with pytest.raises(TextTooLong, match=r"prompt is 101 characters.*at most 100.*max-prompt"):
        check_length("x" * 101, 100, "prompt")


def test_a_studio_request_is_cleaned_and_checked():
    prompt, options = clean_request(
        "a\r\nb\x00",
        {
            "memory": "m\x1b",
            "authors_note": "n\r",
            "history": [{"role": "user", "content": "hi\x00"}],
            "temperature": 0.5,
        },
        max_chars=100,
    )
    assert prompt == "a\nb"
    assert options == {
        "memory": "m",
        "authors_note": "n\n",
        "history": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
    }
    # One limit for everything a generation reads, as on every API route.
    with pytest.raises(TextTooLong, match="text is 101 characters"):
        clean_request("a" * 101, {}, max_chars=100)
    with pytest.raises(TextTooLong, match="memory, author's note and earlier messages is 121"):
        clean_request("a", {"memory": "m" * 60, "authors_note": "n" * 60}, max_chars=100)
    with pytest.raises(TextTooLong, match="is 101 characters"):
        clean_request("a", {"history": [{"role": "user", "content": "h" * 100}]}, max_chars=100)
    clean_request("a" * 40, {"memory": "m" * 30, "authors_note": "n" * 30}, max_chars=100)


def test_the_api_cleans_what_it_is_sent(tiny_server):
    body = {
        "prompt": "The dragon\r\nslept\x00 \ud800here",
        "memory": "cafe\u0301",
        "model": "\ud800",
        "seed": 2,
        "max_new_tokens": 8,
    }
    # json.dumps escapes the lone surrogates as \ud800, as a JavaScript client would.
    content = json.dumps(body).encode("ascii")
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{tiny_server}/api/generate", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["stories"][0]["prompt"] == "The dragon\nslept here"
