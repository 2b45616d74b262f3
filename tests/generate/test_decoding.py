from taleforge.generate.decoding import (
    AUTHORS_NOTE_DEPTH,
    EncodedRequest,
    build_context,
    step_context,
    window_plan,
)


def test_everything_fits_in_one_step():
    assert window_plan(story_length=10, remaining=20, room=50) == (10, 20)


def test_long_story_keeps_half_the_room_as_context():
    keep, step = window_plan(story_length=100, remaining=500, room=40)
    assert (keep, step) == (20, 20)
    keep, step = window_plan(story_length=3, remaining=500, room=40)
    assert (keep, step) == (3, 20)


def test_context_always_starts_with_the_header():
    header = [1, 2, 3]
    story = list(range(100, 200))
    assert build_context(header, story, keep=5) == [1, 2, 3, 195, 196, 197, 198, 199]
    assert build_context(header, story, keep=0) == header


def test_authors_note_goes_near_the_end():
    story = list(range(1000, 1000 + 2 * AUTHORS_NOTE_DEPTH))
    context = build_context([7], story, keep=len(story), note_ids=[-1, -2])
    at = context.index(-1)
    assert context[at : at + 2] == [-1, -2]
    assert len(context) - at - 2 == AUTHORS_NOTE_DEPTH


def test_a_step_names_its_parts_and_is_the_context_build_context_makes():
    header, story, note = [1, 2], list(range(100, 300)), [-1, -2]
    step = step_context(header, story, remaining=50, room=120, note_ids=note)
    keep, new_tokens = window_plan(len(story), 50, 120)
    assert step.ids == build_context(header, story, keep, note)
    assert (step.kept, step.new_tokens) == (keep, new_tokens)
    assert step.story_after_note == tuple(story[-AUTHORS_NOTE_DEPTH:])
    assert step.note == (-1, -2) and step.header == (1, 2)
    plain = step_context(header, story[:5], remaining=10, room=120)
    assert plain.story_before_note == tuple(story[:5]) and plain.story_after_note == ()


def test_an_encoded_request_steps_over_what_was_written():
    encoded = EncodedRequest(header=[1], opening=[10, 11], note=[], room=20)
    assert encoded.step((), 30).ids == [1, 10, 11]
    later = encoded.step([12, 13], 28)
    assert later.ids[-2:] == [12, 13] and later.new_tokens == 10
