"""A stream ends with the whole text: what it held back as the possible start of a stop
sequence is sent once the story ends without that stop sequence."""

from __future__ import annotations

from taleforge.generate.postprocess import stream_tail


def test_the_tail_is_what_was_held_back_without_an_unfinished_character():
    assert stream_tail("The End", 4) == "End"
    assert stream_tail("The End\ufffd", 4) == "End"
    assert stream_tail("The End", 7) == ""


def test_a_story_that_ends_on_the_start_of_a_stop_sequence_streams_it(tiny_generator):
    ask = {"mode": "continue", "genre": "none", "temperature": 0, "max_new_tokens": 20}
    whole = "".join(chunk.text for chunk in tiny_generator.stream("The dragon", **ask))
    last = whole.rstrip("\ufffd")[-1]
    # A stop sequence that starts with the story's last character and never appears: the
    # stream held that character back, waiting to see whether the stop sequence follows.
    stream = tiny_generator.stream("The dragon", stop=[last + "\x01never"], **ask)
    streamed = "".join(chunk.text for chunk in stream)
    assert streamed == whole
    assert stream.result.stories[0].finish_reason == "length"
