"""Each metric against values worked out by hand on tiny examples (derivations inline)."""

import math
import random

import pytest

from taleforge.evaluate import metrics as m
from taleforge.evaluate.relevance import (
    TfidfSimilarity,
    genre_adherence,
    ranking_accuracy,
    ranking_candidates,
)


def test_words_are_lowercased_without_punctuation():
    assert m.words("The cat's hat, the CAT!") == ["the", "cat's", "hat", "the", "cat"]


def test_distinct_n_counts_unique_ngrams_over_all_texts():
    texts = ["a b a b", "a b c"]
    # unigrams a b a b a b c: 7, unique {a, b, c}: 3
    assert m.distinct_n(texts, 1) == pytest.approx(3 / 7)
    # bigrams ab ba ab | ab bc: 5, unique {ab, ba, bc}: 3
    assert m.distinct_n(texts, 2) == pytest.approx(3 / 5)
    # trigrams aba bab | abc: 3, all unique
    assert m.distinct_n(texts, 3) == pytest.approx(1.0)
    assert m.distinct_n(["a"], 2) == 0.0


def test_seq_rep_4_is_the_share_of_repeated_four_grams():
    # 4-grams abcd bcda cdab dabc abcd: 5, unique 4 -> 1 - 4/5
    assert m.seq_rep_n("a b c d a b c d", 4) == pytest.approx(0.2)
    assert m.seq_rep_n("a b c d e", 4) == 0.0
    assert m.seq_rep_n("a b", 4) == 0.0


def test_repeated_line_rate_pools_lines_and_ignores_blank_ones():
    story = "The door opened.\nIt was dark.\n\nthe door opened. \nThe door opened."
    assert m.repeated_lines(story) == (2, 4)
    assert m.repeated_line_rate([story, "One line."]) == pytest.approx(2 / 5)


def test_self_bleu_by_hand():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (and the other way round):
    # clipped n-gram precisions 5/6, 3/5, 2/4, 1/3; same length, so no brevity penalty:
    # BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = 0.5373
    expected = 100 * (5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25
    texts = ["the cat sat on the mat", "the cat sat on a mat"]
    assert m.self_bleu(texts) == pytest.approx(expected, abs=1e-6)
    assert m.bleu(texts[:1], texts[1:]) == pytest.approx(expected, abs=1e-6)
    assert m.self_bleu(["one two three four", "one two three four"]) == pytest.approx(100)
    with pytest.raises(ValueError, match="two texts"):
        m.self_bleu(["alone"])


def test_chrf_by_hand():
    # "abc" vs "abd": char 1-grams F=2/3, 2-grams (ab bc vs ab bd) F=1/2, 3-grams F=0;
    # longer orders are absent from both and not averaged: (2/3 + 1/2 + 0) / 3 = 0.3889
    assert m.chrf(["abc"], ["abd"]) == pytest.approx(100 * (2 / 3 + 1 / 2) / 3)
    # "ab" vs "ac": 1-grams 1/2, 2-grams 0 -> 0.25
    assert m.chrf(["ab"], ["ac"]) == pytest.approx(25.0)


def test_length_stats():
    # sorted 1 2 3 10; quartiles interpolate at positions 0.75 and 2.25: 1.75 and 4.75
    assert m.length_stats([3, 1, 2, 10]) == {
        "mean": 4.0,
        "median": 2.5,
        "q1": 1.75,
        "q3": 4.75,
        "min": 1.0,
        "max": 10.0,
    }
    assert m.length_stats([7])["q1"] == m.length_stats([7])["q3"] == 7.0
    assert set(m.length_stats([]).values()) == {0.0}


def test_a_story_that_opens_mid_sentence_starts_lower_case():
    assert m.starts_lowercase("is an ancient stone that was carved into the side")
    assert m.starts_lowercase('  "and then?" she asked.')
    assert m.starts_lowercase("\u2026but nobody came.")
    assert not m.starts_lowercase('"Who is there?" asked the keeper.')
    assert not m.starts_lowercase("\u00c9lodie ran.")
    assert not m.starts_lowercase("3 dragons")
    assert not m.starts_lowercase("")
    assert not m.starts_lowercase(" ... ")


def test_mean_ci_is_the_student_t_interval():
    # mean 3, sd sqrt(2.5), se sqrt(2.5/5) = 0.7071, t(0.975, 4) = 2.7764 -> +-1.9633
    mean, low, high = m.mean_ci([1, 2, 3, 4, 5])
    assert mean == 3
    assert (low, high) == pytest.approx((3 - 1.9633, 3 + 1.9633), abs=1e-4)
    assert m.mean_ci([4]) == (4, -math.inf, math.inf)


def test_bootstrap_ci_brackets_the_mean_and_collapses_without_spread():
    assert m.bootstrap_ci([1.0] * 8) == (1.0, 1.0, 1.0)
    mean, low, high = m.bootstrap_ci([0, 1] * 20)
    assert mean == 0.5 and 0.3 < low < 0.5 < high < 0.7


def test_prompt_ranking_accuracy_needs_the_true_prompt_strictly_lowest():
    losses = [
        [1.0, 2.0, 3.0],  # true prompt lowest: pass
        [2.0, 1.0, 3.0],  # another prompt lower: fail
        [1.0, 1.0, 3.0],  # a tie is not a win
        [0.5, 0.6, 0.7],
    ]
    assert ranking_accuracy(losses) == 0.5


def test_ranking_candidates_put_the_true_prompt_first_and_draw_distinct_others():
    candidates = ranking_candidates(12, 10, seed=3)
    assert [c[0] for c in candidates] == list(range(12))
    for index, row in enumerate(candidates):
        assert len(row) == 10 and len(set(row)) == 10 and index not in row[1:]
    assert candidates == ranking_candidates(12, 10, seed=3)
    assert all(len(row) == 3 for row in ranking_candidates(3, 10, seed=0))


def test_tfidf_similarity_by_hand():
    similarity = TfidfSimilarity.fit(["red dragon", "red fox"])
    # idf = ln((1+n)/(1+df)) + 1: red 1, dragon = fox = ln(3/2) + 1 = 1.4055
    # cos((dragon 1.4055, red 1), (fox 1.4055, red 1)) = 1 / (1.4055^2 + 1) = 0.3361
    idf = math.log(1.5) + 1
    assert similarity.pairwise(["red dragon"], ["red fox"]) == pytest.approx([1 / (idf**2 + 1)])
    assert similarity.pairwise(["red dragon", "the dragon"], ["red dragon", "a fox"]) == (
        pytest.approx([1.0, 0.0])
    )
    # story 0 belongs to prompt 0, so it is compared with prompt 1 only, and vice versa
    others = similarity.mismatched(["red dragon", "red fox"], ["red fox", "red fox"], [0, 1])
    assert others == pytest.approx([1.0, 1 / (idf**2 + 1)])


def test_genre_adherence_counts_only_stories_with_a_known_genre():
    def predict(texts):
        return ["horror" if "ghost" in t else "comedy" for t in texts]

    share, counted = genre_adherence(
        predict,
        ["a ghost", "a ghost", "a clown", "whatever", "a ghost"],
        ["horror", "comedy", "comedy", None, "western"],
        known=("horror", "comedy"),
    )
    assert (share, counted) == (pytest.approx(2 / 3), 3)
    assert genre_adherence(predict, ["x"], [None], known=("horror",)) == (None, 0)


def test_sample_others_never_returns_the_item_itself():
    rng = random.Random(0)
    for _ in range(20):
        assert 2 not in m.sample_others(5, 2, 3, rng)
