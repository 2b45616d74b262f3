"""The story library on SQLite and PostgreSQL: privacy, versions, search, delete and undo."""

from __future__ import annotations

import time

import pytest

from taleforge.store import Accounts, Library, LibraryError, StoryNotFound
from taleforge.store.export import export_story, filename


@pytest.fixture
def writers(database):
    accounts = Accounts(database)
    return accounts.sign_up("ada", "correct horse battery"), accounts.sign_up("bob", "pw of bob!")


def test_a_saved_story_comes_back_with_everything_that_made_it(database, writers):
    ada, _ = writers
    library = Library(database)
    saved = library.create(
        ada,
        text="The dragon slept.",
        prompt="a sleepy dragon",
        genre="fantasy",
        mode="story",
        model="taleforge-stories",
        parameters={"temperature": 0.8, "top_k": 50},
        seed=2**40,
    )
    story = library.get(ada, saved.id)
    assert story.title == "a sleepy dragon"
    assert (story.text, story.genre, story.seed) == ("The dragon slept.", "fantasy", 2**40)
    assert story.parameters == {"temperature": 0.8, "top_k": 50}
    assert story.versions == 1


def test_no_writer_sees_or_touches_another_writers_story(database, writers):
    ada, bob = writers
    library = Library(database)
    story = library.create(ada, text="Ada's secret story", title="Mine")
    attempts = [
        lambda: library.get(bob, story.id),
        lambda: library.update(bob, story.id, text="defaced"),
        lambda: library.rename(bob, story.id, "stolen"),
        lambda: library.delete(bob, story.id),
        lambda: library.versions(bob, story.id),
        lambda: library.restore_version(bob, story.id, 1),
        lambda: library.rate(bob, story.id, 1),
    ]
    for attempt in attempts:
        with pytest.raises(StoryNotFound, match=f"no story {story.id}"):
            attempt()
    assert library.search(bob) == []
    assert library.search(bob, "secret") == []
    unchanged = library.get(ada, story.id)
    assert (unchanged.title, unchanged.text, unchanged.rating) == (
        "Mine",
        "Ada's secret story",
        None,
    )


def test_every_edit_is_a_version_and_any_can_be_restored(database, writers):
    ada, _ = writers
    library = Library(database)
    story = library.create(ada, text="One.", title="Count")
    library.update(ada, story.id, text="One. Two.", kind="generate")
    library.update(ada, story.id, text="One. Two.", kind="autosave")  # unchanged: no version
    library.update(ada, story.id, text="One, two, three.", kind="edit")
    versions = library.versions(ada, story.id)
    assert [(v.number, v.kind, v.text) for v in versions] == [
        (1, "save", "One."),
        (2, "generate", "One. Two."),
        (3, "edit", "One, two, three."),
    ]
    restored = library.restore_version(ada, story.id, 1)
    assert restored.text == "One." and restored.versions == 4
    assert library.versions(ada, story.id)[-1].kind == "restore"
    with pytest.raises(StoryNotFound, match="no version 99"):
        library.restore_version(ada, story.id, 99)


def test_search_by_title_text_and_genre_any_case(database, writers):
    ada, _ = writers
    library = Library(database)
    library.create(ada, text="A ship drifts past Saturn.", title="Rings", genre="sci-fi")
    library.create(ada, text="The dragon's hoard.", title="Gold", genre="fantasy")
    library.create(ada, text="100% of the wolves_ howled.", title="Night", genre="horror")
    assert [s.title for s in library.search(ada, "saturn")] == ["Rings"]
    assert [s.title for s in library.search(ada, "GOLD")] == ["Gold"]
    assert [s.title for s in library.search(ada, genre="horror")] == ["Night"]
    assert [s.title for s in library.search(ada, "100%")] == ["Night"]
    assert [s.title for s in library.search(ada, "%")] == ["Night"]  # literal, no wildcard
    assert library.search(ada, "d_a") == []
    assert [s.title for s in library.search(ada, "wolves_")] == ["Night"]
    assert {s.title for s in library.search(ada)} == {"Rings", "Gold", "Night"}


def test_deleted_stories_can_be_restored_within_the_undo_window(database, writers):
    ada, _ = writers
    library = Library(database, undo_seconds=600)
    story = library.create(ada, text="Keep me.", title="Precious")
    library.delete(ada, story.id)
    assert library.search(ada) == []
    with pytest.raises(StoryNotFound, match="deleted"):
        library.get(ada, story.id)
    assert library.undelete(ada, story.id).text == "Keep me."
    assert [s.title for s in library.search(ada)] == ["Precious"]


def test_after_the_undo_window_a_deleted_story_is_gone(database, writers):
    ada, _ = writers
    library = Library(database, undo_seconds=0)
    story = library.create(ada, text="Bye.", title="Gone")
    library.delete(ada, story.id)
    time.sleep(0.01)
    assert library.purge() == 1
    with pytest.raises(StoryNotFound):
        library.undelete(ada, story.id)


def test_ratings_are_one_to_five_and_feed_the_human_evaluation(database, writers):
    ada, bob = writers
    library = Library(database)
    story = library.create(ada, text="Rated.", title="R", model="taleforge-stories")
    with pytest.raises(LibraryError, match="1 to 5"):
        library.rate(ada, story.id, 6)
    library.rate(ada, story.id, 3)
    assert library.rate(ada, story.id, 4, "good pacing").rating == 4
    (rating,) = library.ratings()
    assert (rating["score"], rating["comment"], rating["model"]) == (
        4,
        "good pacing",
        "taleforge-stories",
    )
    assert library.ratings(bob) == []


def test_titles_are_checked(database, writers):
    ada, _ = writers
    library = Library(database)
    story = library.create(ada, text="x", title="ok")
    with pytest.raises(LibraryError, match="empty"):
        library.rename(ada, story.id, "   ")
    with pytest.raises(LibraryError, match="at most 200"):
        library.rename(ada, story.id, "t" * 201)


def test_exports_in_txt_md_and_epub(database, writers, tmp_path):
    ada, _ = writers
    library = Library(database)
    story = library.create(
        ada,
        text="First <b>paragraph</b>.\n\nSecond paragraph.",
        title="Ünïcode & <Tags>",
        genre="fantasy",
    )
    assert export_story(story, "txt").decode().startswith("Ünïcode & <Tags>\n\nFirst")
    markdown = export_story(story, "md").decode()
    assert markdown.startswith("# Ünïcode & <Tags>") and "*Genre: fantasy*" in markdown
    assert filename(story, "epub") == "unicode-tags.epub"
    path = tmp_path / "story.epub"
    path.write_bytes(export_story(story, "epub"))
    from ebooklib import ITEM_DOCUMENT, epub

    book = epub.read_epub(str(path))
    assert book.get_metadata("DC", "title")[0][0] == "Ünïcode & <Tags>"
    pages = [i.get_content().decode() for i in book.get_items_of_type(ITEM_DOCUMENT)]
    body = next(p for p in pages if "Second paragraph" in p)
    assert "First &lt;b&gt;paragraph&lt;/b&gt;." in body  # text, not markup
    with pytest.raises(ValueError, match="txt, md, epub"):
        export_story(story, "pdf")


def test_library_stars_feed_the_human_evaluation_summary(database, database_url, tmp_path, capsys):
    from taleforge.cli import main

    accounts, library = Accounts(database), Library(database)
    raters = [accounts.sign_up(f"rater{n}", "a long password") for n in range(3)]
    for rater, score in zip(raters, (3, 4, 5), strict=True):
        story = library.create(rater, text="A story.", model="taleforge-stories")
        library.rate(rater, story.id, score)
    none = tmp_path / "no-ratings.jsonl"
    argv = ["rate", "--summary", "--library", "--database-url", database_url]
    assert main([*argv, "--ratings", str(none)]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "library:rater0" in out
    row = next(line for line in out.splitlines() if line.startswith("taleforge-stories"))
    assert "4.00 [" in row and "(3)" in row  # mean of 3, 4, 5 with its interval
