import pytest

from taleforge.errors import ConfigError
from taleforge.genres import (
    GENRES,
    choose_genre,
    detect_genre,
    genre_tag,
    normalize_genre,
    split_leading_tag,
)


@pytest.mark.parametrize(
    ("prompt", "genre"),
    [
        ("magic castle", "fantasy"),
        ("A robot wakes up on a dying space station", "sci-fi"),
        ("The haunted house at the end of the street", "horror"),
        ("Pirates search an island for buried treasure", "adventure"),
        ("The detective finds a clue nobody else saw", "mystery"),
        ("Two strangers fall in love on a night train", "romance"),
        ("A clown's prank goes hilariously wrong", "comedy"),
    ],
)
def test_detects_the_obvious_genre(prompt, genre):
    assert detect_genre(prompt) == genre


def test_no_signal_means_no_genre():
    assert detect_genre("It was Tuesday.") is None
    assert choose_genre("auto", "It was Tuesday.").source == "none"


def test_choice_records_where_the_genre_came_from():
    assert choose_genre("auto", "a dragon") == choose_genre("auto", "a dragon")
    assert choose_genre("auto", "a dragon").source == "auto"
    assert choose_genre("Sci-Fi", "a dragon").genre == "sci-fi"
    assert choose_genre("Sci-Fi", "a dragon").source == "explicit"
    assert choose_genre("none", "a dragon").genre is None


def test_aliases_and_unknown_genres():
    assert normalize_genre("science fiction") == "sci-fi"
    assert normalize_genre("Humour") == "comedy"
    with pytest.raises(ConfigError, match="unknown genre 'western'.*fantasy"):
        normalize_genre("western")


def test_tags():
    assert genre_tag("sci-fi") == "[SCI-FI]"
    assert split_leading_tag("[FANTASY] The dragon woke.") == ("fantasy", "The dragon woke.")
    assert split_leading_tag("[WP] A prompt") == (None, "[WP] A prompt")
    assert len(GENRES) >= 7
