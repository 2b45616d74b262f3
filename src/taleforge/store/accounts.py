"""Accounts: sign-up, log-in, password change (argon2), log-in sessions, API tokens, the
local user.

Passwords are hashed with argon2id (``argon2-cffi``); API tokens and session ids are random
256-bit strings stored as SHA-256 hashes (tokens are shown once, when created). A password
change ends every session and revokes every token of the account.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from taleforge.errors import TaleforgeError
from taleforge.store.db import Database
from taleforge.store.models import ApiToken, LoginSession, User, now

#: The user every request acts as in anonymous (single-user, local) mode. It has no
#: password, so nobody can log in as it.
LOCAL_USER = "local"
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
TOKEN_PREFIX = "tf_"
#: How stale ``last_seen_at`` may get before a request writes it again (one write a minute
#: per session at most; the idle lifetime is this much less precise).
SEEN_EVERY = timedelta(seconds=60)

_hasher = PasswordHasher()
#: Verified against when the user does not exist, so "no such user" and "wrong password"
#: take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(TaleforgeError, ValueError):
    """A sign-up, log-in or password change that cannot be done; the message says why."""


@dataclass(frozen=True)
class Account:
    """Who a request acts for."""

    id: int
    username: str

    @property
    def is_local(self) -> bool:
        return self.username == LOCAL_USER


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


def _account(user: User) -> Account:
    return Account(user.id, user.username)


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored in UTC), PostgreSQL aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is too long: use at most {MAX_PASSWORD} characters")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Accounts:
    """Users and API tokens in ``db``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def sign_up(self, username: str, password: str) -> Account:
        """Create an account.

        Raises:
            AccountError: The name is taken or invalid, or the password too short or long.
        """
        username = username.strip()
        if not USERNAME.match(username):
            raise AccountError(
                "choose a user name of 3-32 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if username.lower() == LOCAL_USER:
            raise AccountError(f"the user name {LOCAL_USER!r} is reserved: choose another")
        _check_password(password)
        try:
            with self.db.session() as session:
                taken = session.scalar(
                    select(User.id).where(User.username.ilike(username.replace("_", r"\_"), "\\"))
                )
                if taken is not None:
                    raise AccountError(f"the user name {username!r} is taken: choose another")
                user = User(username=username, password_hash=_hasher.hash(password))
                session.add(user)
                session.flush()
                return _account(user)
        except IntegrityError:  # a concurrent sign-up with the same name won the race
            raise AccountError(f"the user name {username!r} is taken: choose another") from None

    def authenticate(self, username: str, password: str) -> Account | None:
        """The account when the password is right, else None (same time either way)."""
        if len(password) > MAX_PASSWORD:
            return None
        with self.db.session() as session:
            user = session.scalar(select(User).where(User.username == username.strip()))
            stored = user.password_hash if user is not None else None
            try:
                _hasher.verify(stored or _DUMMY_HASH, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return None
            if user is None or stored is None:
                return None
            if _hasher.check_needs_rehash(stored):
                user.password_hash = _hasher.hash(password)
            return _account(user)

    def change_password(self, account: Account, old: str, new: str) -> None:
        """Raises AccountError when ``old`` is wrong or ``new`` unacceptable."""
        if self.authenticate(account.username, old) is None:
            raise AccountError("the current password is wrong")
        _check_password(new)
        with self.db.session() as session:
            user = session.get(User, account.id)
            if user is None:
                raise AccountError("this account no longer exists")
            user.password_hash = _hasher.hash(new)
            user.password_changed_at = now()
            # whoever knew the old password may hold a session or a token: end them all
            session.execute(delete(LoginSession).where(LoginSession.user_id == account.id))
            session.execute(
                update(ApiToken)
                .where(ApiToken.user_id == account.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=now())
            )

    def delete_account(self, account: Account, password: str) -> None:
        """Delete the account and all it owns: stories, ratings, API tokens, sessions.

        Raises:
            AccountError: The password is wrong (or the account is the local writer).
        """
        if account.is_local or self.authenticate(account.username, password) is None:
            raise AccountError("the password is wrong")
        with self.db.session() as session:
            # the database cascades to stories (and their versions), ratings, tokens, sessions
            session.execute(delete(User).where(User.id == account.id))

    def get(self, user_id: int) -> Account | None:
        with self.db.session() as session:
            user = session.get(User, user_id)
            return _account(user) if user is not None else None

    def by_name(self, username: str) -> Account | None:
        with self.db.session() as session:
            user = session.scalar(select(User).where(User.username == username))
            return _account(user) if user is not None else None

    def local_user(self) -> Account:
        """The built-in user of anonymous mode (created on first use)."""
        with self.db.session() as session:
            user = session.scalar(select(User).where(User.username == LOCAL_USER))
            if user is None:
                try:
                    with session.begin_nested():
                        user = User(username=LOCAL_USER, password_hash=None)
                        session.add(user)
                except IntegrityError:  # another process created it first
                    user = session.scalar(select(User).where(User.username == LOCAL_USER))
            assert user is not None
            return _account(user)

    # -- log-in sessions -------------------------------------------------------------------

    def start_session(self, account: Account) -> str:
        """A new log-in session for ``account``; its id goes in the browser's cookie."""
        session_id = secrets.token_urlsafe(32)
        with self.db.session() as session:
            session.add(LoginSession(id=_token_hash(session_id), user_id=account.id))
        return session_id

    def session_account(
        self, session_id: str, idle_seconds: int, max_seconds: int
    ) -> Account | None:
        """The account of a live session, else None: unknown, ended, unused for longer than
        ``idle_seconds`` or older than ``max_seconds`` (an expired session is deleted)."""
        if len(session_id) > 200:
            return None
        moment = now()
        with self.db.session() as session:
            row = session.get(LoginSession, _token_hash(session_id))
            if row is None:
                return None
            last_seen = _utc(row.last_seen_at)
            idle = moment - last_seen > timedelta(seconds=idle_seconds)
            if idle or moment - _utc(row.created_at) > timedelta(seconds=max_seconds):
                session.delete(row)
                return None
            if moment - last_seen > SEEN_EVERY:
                row.last_seen_at = moment
            user = session.get(User, row.user_id)
            return _account(user) if user is not None else None

    def end_session(self, session_id: str) -> None:
        """Log one browser out (nothing happens for an unknown id)."""
        with self.db.session() as session:
            session.execute(delete(LoginSession).where(LoginSession.id == _token_hash(session_id)))

    def end_sessions(self, account: Account) -> int:
        """Log ``account`` out everywhere; how many sessions ended."""
        with self.db.session() as session:
            result = session.execute(delete(LoginSession).where(LoginSession.user_id == account.id))
            return int(getattr(result, "rowcount", 0) or 0)

    # -- API tokens ------------------------------------------------------------------------

    def create_token(self, account: Account, name: str = "api") -> str:
        """A new API token for ``account``; the only time its plain text is available."""
        name = name.strip()[:100] or "api"
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as session:
            session.add(
                ApiToken(
                    user_id=account.id,
                    name=name,
                    prefix=token[:10],
                    token_hash=_token_hash(token),
                )
            )
        return token

    def verify_token(self, token: str) -> Account | None:
        """The account an unrevoked token belongs to, else None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        with self.db.session() as session:
            row = session.scalar(
                select(ApiToken).where(
                    ApiToken.token_hash == _token_hash(token), ApiToken.revoked_at.is_(None)
                )
            )
            if row is None:
                return None
            row.last_used_at = now()
            user = session.get(User, row.user_id)
            return _account(user) if user is not None else None

    def tokens(self, account: Account) -> list[TokenInfo]:
        with self.db.session() as session:
            rows = session.scalars(
                select(ApiToken)
                .where(ApiToken.user_id == account.id, ApiToken.revoked_at.is_(None))
                .order_by(ApiToken.id)
            )
            return [TokenInfo(r.id, r.name, r.prefix, r.created_at, r.last_used_at) for r in rows]

    def revoke_token(self, account: Account, token_id: int) -> bool:
        """Revoke one of ``account``'s tokens; False when it has no such token."""
        with self.db.session() as session:
            row = session.get(ApiToken, token_id)
            if row is None or row.user_id != account.id or row.revoked_at is not None:
                return False
            row.revoked_at = now()
            return True
