from taleforge.generate.postprocess import (
    cut_at_stop,
    finish_text,
    normalize_whitespace,
    stream_safe_length,
    strip_template_markers,
    trim_to_sentence,
)


def test_cut_at_the_earliest_stop():
    assert cut_at_stop("one. THE END two. ###", ["###", "THE END"]) == ("one. ", True)
    assert cut_at_stop("no stop here", ["###"]) == ("no stop here", False)


def test_streaming_holds_back_a_possible_stop_prefix():
    assert stream_safe_length("The night was dark. TH", ["THE END"]) == len("The night was dark. ")
    assert stream_safe_length("The night was dark.", ["THE END"]) == len("The night was dark.")
    # an incomplete multi-byte character is not shown yet
    assert stream_safe_length("caf\ufffd", []) == 3


def test_whitespace_and_control_characters():
    text = "  Line one.   \r\n\r\n\r\n\r\nLine\x07 two  has  spaces.\t\n"
    assert normalize_whitespace(text) == "Line one.\n\nLine two has spaces."


def test_trim_to_last_complete_sentence():
    assert trim_to_sentence('He ran. "Stop!" she cried. And then the') == (
        'He ran. "Stop!" she cried.'
    )
    assert trim_to_sentence("no sentence end at all") == "no sentence end at all"


def test_template_markers_never_survive():
    assert strip_template_markers("[WP] x [RESPONSE] story<|endoftext|>") == " x  story"


def test_finish_text_does_not_trim_after_a_stop():
    text, stopped = finish_text("A whole tale. Half a\n###rest", stops=["###"], trim=True)
    assert stopped and text == "A whole tale. Half a"
    text, stopped = finish_text("A whole tale. Half a", stops=[], trim=True)
    assert not stopped and text == "A whole tale."
