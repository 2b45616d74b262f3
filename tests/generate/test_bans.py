"""Banned phrases: what matches, and how much of a growing text is safe to show."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from taleforge.generate.bans import PhraseBans

BANS = PhraseBans(["the old man", "Shivers down her spine", "—and then"])


def test_a_ban_matches_whole_words_in_any_case_and_spacing():
    assert BANS.find("Then The old\n  man, smiling.") == 5
    assert BANS.find("and shivers down her spine ran") == 4
    assert BANS.find("to bathe old man") is None
    assert BANS.find("the old mango") is None
    assert BANS.find("it was—and then it was not") == 6


def test_a_phrase_at_the_end_counts_only_once_the_next_character_cannot_extend_it():
    assert BANS.find("he met the old man") is None  # "the old mango" is still possible
    assert BANS.find("he met the old man", final=True) == 7
    assert BANS.find("he met the old man.") == 7


def test_the_unfinished_start_of_a_banned_phrase_is_held_back():
    assert BANS.safe_length("He saw the old ") == len("He saw ")
    assert BANS.safe_length("He saw the") == len("He saw ")
    assert BANS.safe_length("He saw them") == len("He saw them")
    assert BANS.safe_length("He saw bathe") == len("He saw bathe")  # not a word start
    assert BANS.safe_length("He saw the old man") == len("He saw ")
    assert BANS.safe_length("He saw the old mango") == len("He saw the old mango")
    assert PhraseBans([]).safe_length("the old man") == len("the old man")


@given(
    st.text(alphabet="theoldman xyz,.\n", max_size=60),
    st.sampled_from(["", " man.", "man.", " old man.", "old man.", "e old man", "go."]),
)
def test_what_is_shown_is_never_taken_back(text, ending):
    """While no ban is in the text, a ban that the rest of the story completes begins at
    or after what was shown."""
    if BANS.find(text) is None:
        at = BANS.find(text + ending, final=True)
        assert at is None or at >= BANS.safe_length(text)


def test_characters_a_finished_story_drops_do_not_hide_a_ban():
    """Control characters and bad bytes are removed from the story: "pl\ufffdsound" ends up as
    "plsound", so a ban must see through them (the tiny test model writes such text)."""
    assert BANS.find("so the o\x07ld man.") == 3
    assert BANS.find("so the ol\ufffdd man.") == 3
    assert BANS.safe_length("He saw the\x19 ol") == len("He saw ")
