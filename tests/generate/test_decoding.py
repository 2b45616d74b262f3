from taleforge.generate.decoding import AUTHORS_NOTE_DEPTH, build_context, window_plan


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
