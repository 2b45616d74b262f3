"""The cliché score on hand-made stories whose over-used phrases are known."""

import math

import pytest

from taleforge.evaluate.cliche import find_cliches, log_odds_ratio
from taleforge.evaluate.report import cliche_lines

STORIES = [
    "once upon a time a fox ran in the morning",
    "once upon a time the moon fell in the morning",
    "once upon a time two owls sang",
]
# The same stories told without the stock opening: every other phrase is as common as in
# the stories (same counts out of the same number of n-grams).
HUMAN = [story.replace("once upon a time", "long ago one spring") for story in STORIES]


def test_log_odds_ratio_by_hand():
    # 3 of 18 generated 4-grams vs 0 of 18 human ones: (4/16) / (1/19) = 4.75
    assert log_odds_ratio(3, 18, 0, 18) == pytest.approx(math.log(4.75))
    assert log_odds_ratio(2, 21, 2, 21) == 0.0


def test_a_phrase_every_story_uses_and_people_never_do_is_the_top_cliche():
    result = find_cliches(STORIES, HUMAN, threshold=1.0)
    top = result.cliches[0]
    assert (top.phrase, top.count, top.stories, top.reference) == ("once upon a time", 3, 3, 0)
    assert top.log_odds == pytest.approx(math.log(4.75))
    # "once upon a" and "upon a time" occur only inside it: not counted again
    assert [c.phrase for c in result.cliches] == ["once upon a time"]
    assert result.words == 27
    assert result.score == pytest.approx(1000 * 3 / 27)


def test_a_phrase_as_common_in_human_text_is_not_a_cliche():
    result = find_cliches(STORIES, HUMAN, threshold=0.0)
    phrases = {c.phrase for c in result.cliches}
    assert "in the morning" not in phrases  # 2 of 21 trigrams in both: log-odds 0
    assert "once upon a time" in phrases


def test_repetition_within_one_story_is_not_a_cliche():
    human = ["the sun rose over the quiet hills " * 5]
    story = "we ran and ran we ran and ran"
    alone = find_cliches([story, "nothing happened here today"], human, threshold=0.0)
    assert alone.cliches == () and alone.score == 0.0
    shared = find_cliches([story, "then we ran and hid"], human, threshold=0.0)
    assert [(c.phrase, c.count, c.stories) for c in shared.cliches] == [("we ran and", 3, 2)]


def test_the_report_lists_the_top_phrases_most_frequent_first():
    # an 8-word stock phrase in 3 stories: its four 5-grams are clichés (3 each); the shorter
    # phrases inside them have the same count and are not counted again
    stories = [f"the red door opened slowly and the blue {n} the green" for n in range(3)]
    found = find_cliches(stories, ["a quiet house by the sea " * 10], threshold=0.0)
    assert [c.phrase for c in found.cliches] == [
        "door opened slowly and the",
        "opened slowly and the blue",
        "red door opened slowly and",
        "the red door opened slowly",
    ]
    report = found.to_dict(top=2)
    assert [c["phrase"] for c in report["cliches"]] == [c.phrase for c in found.cliches[:2]]
    assert report["cliche_phrases"] == 4
    assert report["cliche_score"] == pytest.approx(1000 * 12 / 33)
    assert find_cliches([], STORIES).score == 0.0


def test_the_markdown_report_lists_each_models_cliches():
    found = find_cliches(STORIES, ["the sun rose over the quiet hills " * 5]).to_dict()
    models = [{"label": "new", "generation": found}, {"label": "old", "generation": None}]
    lines = cliche_lines({"models": models})
    assert lines[0] == "## Clichés"
    assert "`new`: 2 clichés, 185.19 per 1,000 words." in lines  # (3 + 2) / 27 words
    rows = [line for line in lines if line.startswith("| ")][1:]  # below the header
    assert [row.split(" | ")[:4] for row in rows] == [
        ["| once upon a time", "3", "3", "0"],
        ["| in the morning", "2", "2", "0"],
    ]
    assert not any("`old`" in line for line in lines)
    assert cliche_lines({"models": models[1:]}) == []
