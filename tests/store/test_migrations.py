"""Alembic migrations on SQLite and PostgreSQL: from empty, from the first schema, and the
version tree's upgrade of a library with history."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from taleforge.store import Accounts, Database, Library


def _schema_differences(db: Database) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from taleforge.store.models import Base

    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_an_empty_database_migrates_to_the_current_schema(database_url):
    db = Database(database_url)
    assert db.revision() is None
    db.migrate()
    assert db.revision() == "0004"
    assert {"users", "stories", "story_versions", "ratings", "api_tokens"} <= db.tables()
    assert _schema_differences(db) == []
    db.migrate()  # every start migrates: a second time changes nothing
    assert db.revision() == "0004"
    db.dispose()


def test_stories_written_under_the_first_schema_survive_the_upgrade(database_url):
    db = Database(database_url)
    db.migrate("0001")
    assert "ratings" not in db.tables()
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with db.engine.begin() as connection:  # rows as the first release wrote them
        connection.execute(
            text(
                "INSERT INTO users (id, username, password_hash, created_at, "
                "password_changed_at) VALUES (1, 'ada', NULL, :t, :t)"
            ),
            {"t": moment},
        )
        connection.execute(
            text(
                "INSERT INTO stories (id, user_id, title, prompt, genre, mode, model, "
                "parameters, seed, text, created_at, updated_at) VALUES (7, 1, 'Old tale', "
                "'a prompt', 'fantasy', 'story', 'gpt2', '{\"temperature\": 0.7}', 42, "
                "'Once upon a time.', :t, :t)"
            ),
            {"t": moment},
        )
        connection.execute(
            text(
                "INSERT INTO story_versions (story_id, number, kind, title, text, created_at) "
                "VALUES (7, 1, 'save', 'Old tale', 'Once upon a time.', :t)"
            ),
            {"t": moment},
        )
    db.migrate()
    assert db.revision() == "0004"
    assert _schema_differences(db) == []
    ada = Accounts(db).get(1)
    assert ada is not None
    library = Library(db)
    story = library.get(ada, 7)
    assert (story.title, story.text, story.seed) == ("Old tale", "Once upon a time.", 42)
    assert story.parameters == {"temperature": 0.7} and story.versions == 1
    # the new features work on old rows
    library.rate(ada, 7, 5)
    library.delete(ada, 7)
    assert library.undelete(ada, 7).rating == 5
    db.dispose()


def test_downgrade_to_the_first_schema_and_back(database_url):
    db = Database(database_url)
    db.migrate()
    ada = Accounts(db).sign_up("ada", "correct horse battery")
    story = Library(db).create(ada, text="One.", title="Kept")
    Library(db).update(ada, story.id, text="One. Two.")
    db.downgrade("0001")
    assert db.revision() == "0001" and "ratings" not in db.tables()
    with db.engine.connect() as connection:  # the stories and all their versions stay
        texts = connection.execute(text("SELECT text FROM story_versions ORDER BY number"))
        assert texts.scalars().all() == ["One.", "One. Two."]
    db.migrate()
    assert db.revision() == "0004" and _schema_differences(db) == []
    db.dispose()


def test_accounts_and_tokens_survive_the_sessions_upgrade(database_url):
    db = Database(database_url)
    db.migrate("0002")
    accounts = Accounts(db)
    ada = accounts.sign_up("ada", "correct horse battery")
    token = accounts.create_token(ada, "script")
    assert "login_sessions" not in db.tables()
    db.migrate()
    assert db.revision() == "0004" and _schema_differences(db) == []
    assert accounts.authenticate("ada", "correct horse battery") == ada
    assert accounts.verify_token(token) == ada
    session_id = accounts.start_session(ada)
    assert accounts.session_account(session_id, 60, 120) == ada
    db.downgrade("0002")
    assert "login_sessions" not in db.tables() and accounts.verify_token(token) == ada
    db.dispose()


def test_a_bad_database_url_says_what_to_write(tmp_path):
    import pytest

    from taleforge.errors import ConfigError
    from taleforge.store import StoreError

    with pytest.raises(ConfigError, match="sqlite:///"):
        Database("not a url")
    with pytest.raises(ConfigError, match="not supported"):
        Database("mysql://u:p@localhost/db")
    with pytest.raises(StoreError, match="cannot open the database"):
        Database("postgresql://nobody:secret@127.0.0.1:1/none").migrate()


def test_the_db_command_shows_and_upgrades_the_schema(database_url, capsys):
    from taleforge.cli import main

    assert main(["db", "current", "--database-url", database_url]) == 0
    assert "none (empty database)" in capsys.readouterr().out
    assert main(["db", "upgrade", "0001", "--database-url", database_url]) == 0
    assert "revision 0001" in capsys.readouterr().out
    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert "revision 0004" in out and "taleforge:taleforge@" not in out  # password hidden
    assert main(["db", "downgrade", "--database-url", database_url]) == 2
    assert "which revision" in capsys.readouterr().err


def test_a_library_with_history_becomes_a_chain_of_versions_with_nothing_lost(database_url):
    db = Database(database_url)
    db.migrate("0003")
    moment = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    drafts = {  # story id: its versions' texts, oldest first (as 0003 kept them)
        7: ["Once.", "Once upon.", "Once upon a time."],
        8: ["Lonely draft."],
        9: ["A.", "A. B.", "A. B. C.", "A."],
    }
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (id, username, password_hash, created_at, "
                "password_changed_at) VALUES (1, 'ada', NULL, :t, :t)"
            ),
            {"t": moment},
        )
        for story_id, texts in drafts.items():
            connection.execute(
                text(
                    "INSERT INTO stories (id, user_id, title, prompt, genre, mode, model, "
                    "parameters, seed, text, created_at, updated_at, deleted_at) VALUES (:id, 1, "
                    ":title, '', NULL, 'story', 'gpt2', '{}', NULL, :text, :t, :t, NULL)"
                ),
                {"id": story_id, "title": f"Tale {story_id}", "text": texts[-1], "t": moment},
            )
            for number, version_text in enumerate(texts, start=1):
                connection.execute(
                    text(
                        "INSERT INTO story_versions (story_id, number, kind, title, text, "
                        "created_at) VALUES (:id, :n, 'save', :title, :text, :t)"
                    ),
                    {
                        "id": story_id,
                        "n": number,
                        "title": f"Tale {story_id}",
                        "text": version_text,
                        "t": moment,
                    },
                )
        connection.execute(
            text(
                "INSERT INTO ratings (story_id, user_id, score, comment, created_at) "
                "VALUES (7, 1, 4, 'lovely', :t)"
            ),
            {"t": moment},
        )
    db.migrate()
    assert db.revision() == "0004" and _schema_differences(db) == []
    ada = Accounts(db).get(1)
    assert ada is not None
    library = Library(db)
    for story_id, texts in drafts.items():
        story = library.get(ada, story_id)
        assert (story.title, story.text) == (f"Tale {story_id}", texts[-1])
        assert (story.versions, story.head) == (len(texts), len(texts))
        assert story.lorebook.entries == ()
        versions = library.versions(ada, story_id)
        assert [v.text for v in versions] == texts
        # the old linear history is one chain, root first
        assert [v.parent for v in versions] == [None, *range(1, len(texts))]
        assert library.path(ada, story_id, len(texts)) == list(range(1, len(texts) + 1))
    assert library.get(ada, 7).rating == 4
    assert library.ratings(ada)[0]["comment"] == "lovely"
    # saving goes on from the head, as before the upgrade
    assert library.update(ada, 7, text="Once upon a time, again.").head == 4
    assert library.version(ada, 7, 4).parent == 3

    db.downgrade("0003")  # in place: no story loses a version or a rating
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM story_versions")).scalar() == 9
        assert connection.execute(text("SELECT count(*) FROM ratings")).scalar() == 1
    db.migrate()
    assert [v.parent for v in library.versions(ada, 9)] == [None, 1, 2, 3]
    assert _schema_differences(db) == []
    db.dispose()
