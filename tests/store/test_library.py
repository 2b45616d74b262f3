"""The story library on SQLite and PostgreSQL: privacy, versions, search, delete and undo."""

from __future__ import annotations

import time

import pytest

from taleforge.generate.lore import Lorebook, LoreEntry
from taleforge.store import Accounts, Library, LibraryError, StoryNotFound
from taleforge.store.export import as_of, export_story, filename


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
        lambda: library.checkout(bob, story.id, 1),
        lambda: library.version(bob, story.id, 1),
        lambda: library.siblings(bob, story.id, 1),
        lambda: library.path(bob, story.id, 1),
        lambda: library.set_lorebook(bob, story.id, Lorebook()),
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
    assert restored.text == "One." and restored.versions == 4 and restored.head == 4
    assert [(v.number, v.parent) for v in library.versions(ada, story.id)] == [
        (1, None),
        (2, 1),
        (3, 2),
        (4, 3),  # a restore grows from what the writer was looking at: nothing is lost
    ]
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


def test_drafts_branch_and_the_writer_moves_between_them_without_adding_versions(database, writers):
    ada, _ = writers
    library = Library(database)
    story = library.create(ada, text="The door opened.", title="Door")
    assert (story.head, story.versions) == (1, 1)
    library.update(ada, story.id, text="The door opened. A wolf came in.", kind="generate")
    # the writer does not like the wolf: another continuation of version 1
    other = library.update(
        ada, story.id, text="The door opened. Nobody was there.", kind="generate", parent=1
    )
    assert (other.head, other.text) == (3, "The door opened. Nobody was there.")
    # a fresh draft from a new prompt, in the same story
    fresh = library.update(ada, story.id, text="Rain all night.", title="Rain", parent=None)
    assert (fresh.head, fresh.title) == (4, "Rain")
    assert [(v.number, v.parent) for v in library.versions(ada, story.id)] == [
        (1, None),
        (2, 1),
        (3, 1),
        (4, None),
    ]
    assert library.siblings(ada, story.id, 2) == [2, 3]
    assert library.siblings(ada, story.id, 4) == [1, 4]  # the roots
    assert library.path(ada, story.id, 3) == [1, 3]

    back = library.checkout(ada, story.id, 2)
    assert (back.head, back.text, back.title) == (2, "The door opened. A wolf came in.", "Door")
    assert back.versions == 4  # moving between branches creates nothing
    assert library.get(ada, story.id).text == "The door opened. A wolf came in."
    # a save grows from the head: version 2's branch goes on
    more = library.update(ada, story.id, text="The door opened. A wolf came in. It sat.")
    assert more.head == 5 and library.path(ada, story.id, 5) == [1, 2, 5]
    assert library.version(ada, story.id, 3).text == "The door opened. Nobody was there."


def test_an_unchanged_save_compares_with_the_head_not_the_newest_version(database, writers):
    ada, _ = writers
    library = Library(database)
    story = library.create(ada, text="A.", title="T")
    library.update(ada, story.id, text="A. B.")
    library.checkout(ada, story.id, 1)
    same = library.update(ada, story.id, text="A.", kind="autosave")
    assert (same.versions, same.head) == (2, 1)  # the head's text again: no new version
    again = library.update(ada, story.id, text="A. B.")  # the newest's text, but from version 1
    assert (again.versions, again.head) == (3, 3)
    assert library.version(ada, story.id, 3).parent == 1


def test_a_version_that_does_not_exist_is_refused_and_nothing_changes(database, writers):
    ada, _ = writers
    library = Library(database)
    story = library.create(ada, text="Kept.", title="Kept")
    with pytest.raises(StoryNotFound, match=f"story {story.id} has no version 7"):
        library.update(ada, story.id, text="Lost?", parent=7)
    with pytest.raises(StoryNotFound, match="has no version 7"):
        library.checkout(ada, story.id, 7)
    with pytest.raises(StoryNotFound, match="has no version 7"):
        library.siblings(ada, story.id, 7)
    after = library.get(ada, story.id)
    assert (after.text, after.versions, after.head) == ("Kept.", 1, 1)


def test_each_story_keeps_its_lorebook_and_a_lorebook_change_is_no_text_version(database, writers):
    ada, _ = writers
    library = Library(database)
    story = library.create(ada, text="Mira met the dragon.", title="Mira")
    other = library.create(ada, text="Another tale.", title="Other")
    assert story.lorebook == Lorebook() and story.to_dict()["lorebook"]["entries"] == []
    lore = Lorebook(
        entries=(LoreEntry(keys=("Mira",), text="Mira is a cartographer of 30."),),
        budget=128,
    )
    saved = library.set_lorebook(ada, story.id, lore)
    assert saved.lorebook == lore and saved.versions == 1 and saved.head == 1
    assert library.get(ada, story.id).lorebook == lore
    assert library.get(ada, story.id).to_dict()["lorebook"]["entries"][0]["keys"] == ["Mira"]
    assert library.get(ada, other.id).lorebook == Lorebook()
    # a new text version keeps the lorebook
    assert library.update(ada, story.id, text="Mira flew.").lorebook == lore


def test_an_export_of_an_earlier_version_has_that_versions_text(database, writers):
    ada, _ = writers
    library = Library(database)
    story = library.create(ada, text="First draft.", title="Draft")
    story = library.update(ada, story.id, text="Second draft.", title="Final")
    first = as_of(story, library.version(ada, story.id, 1))
    assert export_story(first, "txt").decode() == "Draft\n\nFirst draft.\n"
    assert filename(first, "md") == "draft.md"
    assert export_story(story, "txt").decode() == "Final\n\nSecond draft.\n"
