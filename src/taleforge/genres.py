"""The genre tag set and a keyword detector for prompts.

Genres are lower-case names (``fantasy``); their tags are upper-case in brackets
(``[FANTASY]``), the form used in training data and prompts of tagged models. The detector is
deliberately simple and deterministic: it scores a prompt against a small lexicon per genre.
The data step can replace it by a trained classifier; both answer "which genre, or none".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from taleforge.errors import ConfigError

#: The documented tag set and, per genre, words that signal it in a prompt.
# fmt: off
GENRE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "fantasy": (
        "magic", "magical", "wizard", "witch", "dragon", "castle", "spell", "elf", "elves",
        "kingdom", "sword", "sorcerer", "enchanted", "fairy", "quest", "prophecy", "potion",
        "curse", "throne", "unicorn", "troll", "goblin", "mage", "realm", "rune",
    ),
    "sci-fi": (
        "space", "spaceship", "starship", "robot", "android", "alien", "planet", "galaxy",
        "future", "ai", "laser", "cyborg", "mars", "moon", "orbit", "time machine", "colony",
        "clone", "quantum", "asteroid", "station", "hologram", "astronaut", "warp",
    ),
    "horror": (
        "ghost", "haunted", "demon", "monster", "zombie", "vampire", "blood", "scream",
        "nightmare", "creature", "cursed", "shadow", "corpse", "graveyard", "terror", "dread",
        "possessed", "basement", "whisper", "fear", "undead", "werewolf",
    ),
    "adventure": (
        "treasure", "expedition", "jungle", "pirate", "island", "map", "explore", "explorer",
        "journey", "mountain", "voyage", "ship", "desert", "escape", "cave", "raft", "climb",
        "wilderness", "compass", "storm", "survive",
    ),
    "mystery": (
        "detective", "murder", "clue", "missing", "disappeared", "suspect", "secret", "case",
        "investigate", "stolen", "theft", "alibi", "witness", "puzzle", "locked", "evidence",
        "inspector", "mysterious", "vanished", "riddle",
    ),
    "romance": (
        "love", "kiss", "heart", "wedding", "date", "romance", "romantic", "lover", "crush",
        "marry", "proposal", "valentine", "sweetheart", "bride", "letter", "falling for",
    ),
    "comedy": (
        "funny", "joke", "hilarious", "prank", "clown", "awkward", "ridiculous", "silly",
        "comedy", "laugh", "absurd", "mishap", "pun", "embarrassing", "sitcom",
    ),
}
# fmt: on

GENRES: tuple[str, ...] = tuple(GENRE_KEYWORDS)

#: Other spellings users type for a genre.
GENRE_ALIASES: dict[str, str] = {
    "scifi": "sci-fi",
    "sci_fi": "sci-fi",
    "science-fiction": "sci-fi",
    "science fiction": "sci-fi",
    "sf": "sci-fi",
    "humor": "comedy",
    "humour": "comedy",
    "funny": "comedy",
    "scary": "horror",
    "crime": "mystery",
    "detective": "mystery",
    "love": "romance",
    "fairy tale": "fantasy",
    "fairy-tale": "fantasy",
    "fairytale": "fantasy",
}

_TAG_RE = re.compile(r"^\s*\[([A-Za-z][A-Za-z -]*)\]\s*")


@dataclass(frozen=True)
class GenreChoice:
    """The genre used for a story and where it came from."""

    genre: str | None
    source: str  # "explicit", "auto", "tag" or "none"


def genre_tag(genre: str) -> str:
    """``'sci-fi'`` -> ``'[SCI-FI]'``."""
    return f"[{genre.upper()}]"


def normalize_genre(name: str) -> str:
    """Map a user-typed genre name to the tag set, or raise with the list of valid names."""
    key = name.strip().lower()
    key = GENRE_ALIASES.get(key, key)
    if key in GENRE_KEYWORDS:
        return key
    raise ConfigError(
        f"unknown genre '{name}': use one of {', '.join(GENRES)}, 'auto' (detect from the "
        "prompt) or 'none'"
    )


def detect_genre(text: str) -> str | None:
    """Return the genre whose keywords best match ``text``, or None when nothing matches.

    Ties are broken by the order of :data:`GENRES`, so the answer is deterministic.
    """
    lowered = text.lower()
    words = re.findall(r"[a-z]+(?:-[a-z]+)?", lowered)
    scores: dict[str, int] = {}
    for genre, keywords in GENRE_KEYWORDS.items():
        score = 0
        for keyword in keywords:
            if " " in keyword:
                score += lowered.count(keyword)
            else:
                score += sum(1 for w in words if w == keyword or w == keyword + "s")
        scores[genre] = score
    best = max(GENRES, key=lambda g: scores[g])
    return best if scores[best] > 0 else None


def choose_genre(requested: str | None, prompt: str) -> GenreChoice:
    """Resolve a requested genre (name, 'auto', 'none' or None) for a prompt."""
    if requested is None or requested.strip().lower() in ("", "none"):
        return GenreChoice(None, "none")
    if requested.strip().lower() == "auto":
        detected = detect_genre(prompt)
        return GenreChoice(detected, "auto" if detected else "none")
    return GenreChoice(normalize_genre(requested), "explicit")


def split_leading_tag(text: str) -> tuple[str | None, str]:
    """Split a leading ``[FANTASY]`` tag off a text: ``('fantasy', rest)`` or ``(None, text)``.

    Tags that are not genres (``[WP]``) are left in place.
    """
    match = _TAG_RE.match(text)
    if match:
        name = match.group(1).strip().lower()
        name = GENRE_ALIASES.get(name, name)
        if name in GENRE_KEYWORDS:
            return name, text[match.end() :]
    return None, text
