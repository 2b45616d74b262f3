"""Accounts on SQLite and PostgreSQL: sign-up, log-in, password change, API tokens."""

from __future__ import annotations

import pytest

from taleforge.store import LOCAL_USER, AccountError, Accounts


def test_sign_up_then_log_in_with_the_password_only(database):
    accounts = Accounts(database)
    ada = accounts.sign_up("ada", "correct horse battery")
    assert accounts.authenticate("ada", "correct horse battery") == ada
    assert accounts.authenticate("ada", "wrong password!") is None
    assert accounts.authenticate("nobody", "correct horse battery") is None


def test_passwords_are_stored_as_argon2_hashes(database):
    from sqlalchemy import select

    from taleforge.store.models import User

    Accounts(database).sign_up("ada", "correct horse battery")
    with database.session() as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "ada"))
    assert stored.startswith("$argon2id$")
    assert "correct horse battery" not in stored


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("ab", "long enough pw", "3-32 letters"),
        ("<script>", "long enough pw", "3-32 letters"),
        ("ada", "short", "at least 8"),
        ("local", "long enough pw", "reserved"),
        ("ada", "x" * 5000, "at most"),
    ],
)
def test_bad_sign_ups_say_what_to_change(database, name, password, message):
    with pytest.raises(AccountError, match=message):
        Accounts(database).sign_up(name, password)


def test_user_names_are_unique_whatever_the_case(database):
    accounts = Accounts(database)
    accounts.sign_up("Ada", "correct horse battery")
    with pytest.raises(AccountError, match="taken"):
        accounts.sign_up("ada", "another password")


def test_password_change_needs_the_old_password(database):
    accounts = Accounts(database)
    ada = accounts.sign_up("ada", "correct horse battery")
    with pytest.raises(AccountError, match="current password is wrong"):
        accounts.change_password(ada, "guess", "new password here")
    accounts.change_password(ada, "correct horse battery", "new password here")
    assert accounts.authenticate("ada", "correct horse battery") is None
    assert accounts.authenticate("ada", "new password here") == ada


def test_the_local_user_cannot_log_in(database):
    accounts = Accounts(database)
    local = accounts.local_user()
    assert local.username == LOCAL_USER and local == accounts.local_user()
    assert accounts.authenticate(LOCAL_USER, "") is None
    assert accounts.authenticate(LOCAL_USER, "anything at all") is None


def test_api_tokens_work_until_revoked_and_only_for_their_owner(database):
    accounts = Accounts(database)
    ada = accounts.sign_up("ada", "correct horse battery")
    bob = accounts.sign_up("bob", "another password")
    token = accounts.create_token(ada, "laptop")
    assert token.startswith("tf_") and len(token) > 40
    assert accounts.verify_token(token) == ada
    assert accounts.verify_token(token + "x") is None
    (info,) = accounts.tokens(ada)
    assert info.name == "laptop" and token.startswith(info.prefix)
    assert accounts.tokens(bob) == []
    assert not accounts.revoke_token(bob, info.id)  # not bob's to revoke
    assert accounts.verify_token(token) == ada
    assert accounts.revoke_token(ada, info.id)
    assert accounts.verify_token(token) is None


def test_sessions_end_on_log_out_everywhere_password_change_and_deletion(database):
    from sqlalchemy import delete

    from taleforge.store.models import User

    accounts = Accounts(database)
    ada = accounts.sign_up("ada", "correct horse battery")
    bob = accounts.sign_up("bob", "correct horse battery")
    live = 3600, 7200

    def alive(session_id: str) -> bool:
        return accounts.session_account(session_id, *live) is not None

    one, two, bobs = (accounts.start_session(a) for a in (ada, ada, bob))
    assert len({one, two, bobs}) == 3 and min(map(len, (one, two, bobs))) >= 43  # 256 bits
    assert alive(one) and alive(two) and accounts.session_account(bobs, *live) == bob
    accounts.end_session(one)
    assert not alive(one) and alive(two)
    assert accounts.end_sessions(ada) == 1 and not alive(two) and alive(bobs)

    three, token = accounts.start_session(ada), accounts.create_token(ada)
    accounts.change_password(ada, "correct horse battery", "a new password")
    assert not alive(three) and accounts.verify_token(token) is None and alive(bobs)

    with database.session() as session:  # an account deleted: its sessions go with it
        session.execute(delete(User).where(User.id == bob.id))
    assert not alive(bobs)
    assert not alive("never issued") and not alive("x" * 500)
