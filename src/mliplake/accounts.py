"""Accounts of the REST API: users, groups, API tokens and an audit log of every change.

One class, :class:`Accounts`, over SQLAlchemy Core: the same code on SQLite (``sqlite:///PATH``,
the default, in the lake's state folder: see :func:`accounts_url`) and on PostgreSQL
(``postgresql+psycopg://user:password@host/db``).  Tables are created when missing.

* A **user** has a name, a display name, an e-mail, roles out of :data:`access.ROLES`, groups,
  and may be disabled (its tokens stop working; nothing is deleted, so the audit stays readable).
* A **token** belongs to a user, has a scope (``read`` or ``write``), may expire and may be
  revoked.  Its secret (``mlk_`` + 43 URL-safe characters) is returned once, by
  :meth:`Accounts.create_token`; only its SHA-256 is stored.
* :meth:`Accounts.authenticate` turns a secret into a :class:`Session`: the
  :class:`access.Principal` (name, groups, roles) *and* the token's id and scope.  The scope is not
  folded into the principal's roles: whoever serves a write (a deposit, a visibility change, ...)
  checks ``session.may_write`` as well as the principal's roles.
* Every change (not reads, not authentications) writes an audit row, in the same transaction:
  when, who (``actor``), what (``action``), to what (``target``) and a JSON ``detail``.  Secrets
  never appear in it.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mliplake.access import ROLES, Principal

SCOPES: tuple[str, ...] = ("read", "write")
TOKEN_PREFIX = "mlk_"
#: user and group names: lower-case letters, digits, ``.``, ``_`` and ``-``, starting with a letter
NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: last_used_at is written at most this often per token (not one write per request)
LAST_USED_RESOLUTION = timedelta(seconds=60)


class AccountsError(ValueError):
    """Bad input or a missing/duplicate account: the message is one line for the user."""


class NotFound(AccountsError, LookupError):
    """No such user, group or token."""


@dataclass(frozen=True)
class Session:
    """What a token proves: who (``principal``), with which token, and what it may do (``scope``)."""

    principal: Principal
    token_id: str
    scope: str
    expires_at: datetime | None = None

    @property
    def may_write(self) -> bool:
        """A ``read`` token may not change anything, whatever its user's roles."""
        return self.scope == "write"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.TypeDecorator):
    """Aware UTC datetimes in and out, on both engines (SQLite keeps naive text: UTC by convention)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: give a timezone (UTC)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = sa.MetaData()
users_t = sa.Table(
    "mlk_users", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False, default=""),
    sa.Column("email", sa.String(320), nullable=False, default=""),
    sa.Column("roles", sa.String(200), nullable=False, default=""),  # sorted, comma-separated
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
groups_t = sa.Table(
    "mlk_groups", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.String(500), nullable=False, default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
members_t = sa.Table(
    "mlk_members", metadata,
    sa.Column("group_name", sa.String(64), sa.ForeignKey("mlk_groups.name"), primary_key=True),
    sa.Column("user_name", sa.String(64), sa.ForeignKey("mlk_users.name"), primary_key=True),
)
tokens_t = sa.Table(
    "mlk_tokens", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_name", sa.String(64), sa.ForeignKey("mlk_users.name"), nullable=False, index=True),
    sa.Column("scope", sa.String(8), nullable=False),
    # SHA-256 of the secret, hex.  No salt and no slow hash (bcrypt, argon2) needed: the secret is
    # 32 random bytes from `secrets` (256 bits), not a password a person chose, so there is no
    # dictionary to try and no rainbow table can cover the space; a plain hash also lets us look the
    # token up by an index in one query instead of checking every row.
    sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
)
audit_t = sa.Table(
    "mlk_audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
)


def normalise_url(url: str) -> str:
    """``sqlite:PATH`` (the catalog's spelling) and ``postgres(ql)://`` accepted too."""
    url = str(url)
    if url.startswith("sqlite:") and not url.startswith("sqlite://"):
        return "sqlite:///" + url[len("sqlite:"):]
    for short in ("postgres://", "postgresql://"):
        if url.startswith(short):
            return "postgresql+psycopg://" + url[len(short):]
    return url


def accounts_url(settings: Any, lake: Any = None) -> str:
    """The accounts database: the ``accounts`` setting, else ``state/accounts.sqlite`` inside a local
    lake, else (an S3 lake) a per-machine SQLite file under ``settings.state_dir``, in the same
    per-lake folder as that lake's default catalog."""
    if settings.accounts:
        return normalise_url(settings.accounts)
    if lake is None:
        raise AccountsError("no accounts database: set MLIPLAKE_ACCOUNTS or give a lake")
    if lake.local:
        return f"sqlite:///{lake.root}/state/accounts.sqlite"
    key = hashlib.sha256(str(lake.url).encode()).hexdigest()[:16]
    return f"sqlite:///{Path(settings.state_dir).expanduser()}/{key}/accounts.sqlite"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise AccountsError(f"{what} {name!r} is not valid: 1-64 characters, lower-case letters, digits, "
                            f"'.', '_' or '-', starting with a letter")
    return name


def check_roles(roles: Iterable[str]) -> list[str]:
    if isinstance(roles, str):
        roles = [roles]
    roles = sorted({str(r).strip() for r in roles if str(r).strip()})
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise AccountsError(f"unknown role{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}: "
                            f"valid roles are {', '.join(ROLES)}")
    return roles


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise AccountsError(f"token scope {scope!r} is not one of {', '.join(SCOPES)}")
    return scope


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` (or a bare number of days) as a timedelta."""
    m = re.fullmatch(r"\s*(-?\d+)\s*([smhdw]?)\s*", str(text))
    if not m:
        raise AccountsError(f"duration {text!r} is not like 30d, 12h, 90m, 2w or 45s")
    n, unit = int(m.group(1)), m.group(2) or "d"
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: n})


def _roles(text: str) -> list[str]:
    return [r for r in text.split(",") if r]


class Accounts:
    """Users, groups, tokens and the audit log in one SQL database (SQLite or PostgreSQL)."""

    def __init__(self, url: str, *, create: bool = True, engine: Engine | None = None) -> None:
        self.url = normalise_url(url)
        if engine is None:
            u = sa.engine.make_url(self.url)
            kwargs: dict[str, Any] = {}
            if u.get_backend_name() == "sqlite":
                if u.database and u.database != ":memory:":
                    Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                kwargs["connect_args"] = {"timeout": 30}
            else:
                kwargs["pool_pre_ping"] = True
            engine = sa.create_engine(self.url, **kwargs)
            if engine.dialect.name == "sqlite":
                sa.event.listen(engine, "connect", _sqlite_pragmas)
        self.engine = engine
        if create:
            metadata.create_all(self.engine, checkfirst=True)

    def __repr__(self) -> str:
        return f"Accounts({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _audit(self, conn: Connection, actor: str, action: str, target: str, now: datetime,
               **detail: Any) -> None:
        conn.execute(audit_t.insert().values(at=now, actor=actor, action=action, target=target,
                                             detail=json.dumps(detail, sort_keys=True, default=str)))

    @staticmethod
    def _actor(actor: str) -> str:
        if not actor or not str(actor).strip():
            raise AccountsError("every change needs an actor (who makes it)")
        return str(actor).strip()

    def _user_row(self, conn: Connection, name: str) -> Any:
        row = conn.execute(sa.select(users_t).where(users_t.c.name == name)).first()
        if row is None:
            raise NotFound(f"no user {name!r}")
        return row

    def _need_group(self, conn: Connection, name: str) -> None:
        if conn.execute(sa.select(groups_t.c.name).where(groups_t.c.name == name)).first() is None:
            raise NotFound(f"no group {name!r} (create it first: mliplake groups add {name})")

    def _groups_of(self, conn: Connection, name: str) -> list[str]:
        q = sa.select(members_t.c.group_name).where(members_t.c.user_name == name).order_by(members_t.c.group_name)
        return list(conn.execute(q).scalars())

    # ------------------------------------------------------------------ users

    def add_user(self, name: str, roles: Iterable[str] = ("reader",), groups: Iterable[str] = (),
                 email: str = "", *, actor: str, display_name: str = "") -> dict[str, Any]:
        """A new user (error if the name is taken); its groups must exist."""
        check_name(name, "user name")
        roles = check_roles(roles)
        groups = sorted({check_name(g, "group name") for g in ([groups] if isinstance(groups, str) else groups)})
        email = (email or "").strip()
        if email and not EMAIL_RE.match(email):
            raise AccountsError(f"e-mail {email!r} is not an address like name@example.org")
        actor = self._actor(actor)
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                if conn.execute(sa.select(users_t.c.name).where(users_t.c.name == name)).first() is not None:
                    raise AccountsError(f"user {name!r} already exists")
                for g in groups:
                    self._need_group(conn, g)
                conn.execute(users_t.insert().values(name=name, display_name=display_name or "", email=email,
                                                     roles=",".join(roles), disabled=False, created_at=now))
                for g in groups:
                    conn.execute(members_t.insert().values(group_name=g, user_name=name))
                self._audit(conn, actor, "user.add", name, now, roles=roles, groups=groups, email=email,
                            display_name=display_name or "")
        except sa.exc.IntegrityError:  # a concurrent add of the same name
            raise AccountsError(f"user {name!r} already exists") from None
        return self.user(name)

    def user(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = self._user_row(conn, name)
            return self._user_dict(row, self._groups_of(conn, name))

    @staticmethod
    def _user_dict(row: Any, groups: list[str]) -> dict[str, Any]:
        return {"name": row.name, "display_name": row.display_name, "email": row.email,
                "roles": _roles(row.roles), "groups": groups, "disabled": bool(row.disabled),
                "created_at": row.created_at}

    def users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            members: dict[str, list[str]] = {}
            for g, u in conn.execute(sa.select(members_t.c.group_name, members_t.c.user_name)
                                     .order_by(members_t.c.group_name)):
                members.setdefault(u, []).append(g)
            rows = conn.execute(sa.select(users_t).order_by(users_t.c.name)).all()
            return [self._user_dict(r, members.get(r.name, [])) for r in rows]

    def set_roles(self, name: str, roles: Iterable[str], *, actor: str) -> list[str]:
        roles = check_roles(roles)
        actor = self._actor(actor)
        now = utcnow()
        with self.engine.begin() as conn:
            old = _roles(self._user_row(conn, name).roles)
            conn.execute(users_t.update().where(users_t.c.name == name).values(roles=",".join(roles)))
            self._audit(conn, actor, "user.set_roles", name, now, before=old, after=roles)
        return roles

    def disable_user(self, name: str, *, actor: str) -> bool:
        """Disable a user: every token of theirs stops authenticating.  False if already disabled."""
        return self._set_disabled(name, True, actor)

    def enable_user(self, name: str, *, actor: str) -> bool:
        return self._set_disabled(name, False, actor)

    def _set_disabled(self, name: str, disabled: bool, actor: str) -> bool:
        actor = self._actor(actor)
        now = utcnow()
        with self.engine.begin() as conn:
            if bool(self._user_row(conn, name).disabled) == disabled:
                return False
            conn.execute(users_t.update().where(users_t.c.name == name).values(disabled=disabled))
            self._audit(conn, actor, "user.disable" if disabled else "user.enable", name, now)
        return True

    # ------------------------------------------------------------------ groups

    def add_group(self, name: str, description: str = "", *, actor: str) -> None:
        check_name(name, "group name")
        actor = self._actor(actor)
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                if conn.execute(sa.select(groups_t.c.name).where(groups_t.c.name == name)).first() is not None:
                    raise AccountsError(f"group {name!r} already exists")
                conn.execute(groups_t.insert().values(name=name, description=description or "", created_at=now))
                self._audit(conn, actor, "group.add", name, now, description=description or "")
        except sa.exc.IntegrityError:
            raise AccountsError(f"group {name!r} already exists") from None

    def add_member(self, group: str, user: str, *, actor: str) -> bool:
        """Put ``user`` in ``group``; False (and no audit row: nothing changed) if already there."""
        actor = self._actor(actor)
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                self._need_group(conn, group)
                self._user_row(conn, user)
                if group in self._groups_of(conn, user):
                    return False
                conn.execute(members_t.insert().values(group_name=group, user_name=user))
                self._audit(conn, actor, "group.add_member", group, now, user=user)
        except sa.exc.IntegrityError:  # added concurrently
            return False
        return True

    def remove_member(self, group: str, user: str, *, actor: str) -> None:
        actor = self._actor(actor)
        now = utcnow()
        with self.engine.begin() as conn:
            self._need_group(conn, group)
            n = conn.execute(members_t.delete().where(members_t.c.group_name == group,
                                                      members_t.c.user_name == user)).rowcount
            if not n:
                raise NotFound(f"user {user!r} is not a member of group {group!r}")
            self._audit(conn, actor, "group.remove_member", group, now, user=user)

    def groups(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            members: dict[str, list[str]] = {}
            for g, u in conn.execute(sa.select(members_t.c.group_name, members_t.c.user_name)
                                     .order_by(members_t.c.user_name)):
                members.setdefault(g, []).append(u)
            rows = conn.execute(sa.select(groups_t).order_by(groups_t.c.name)).all()
            return [{"name": r.name, "description": r.description, "members": members.get(r.name, []),
                     "created_at": r.created_at} for r in rows]

    # ------------------------------------------------------------------ tokens

    def create_token(self, user: str, scope: str = "read", expires: timedelta | None = None, *,
                     actor: str, now: datetime | None = None) -> tuple[str, str]:
        """A new token for ``user``: ``(token_id, secret)``.  The secret is not kept: show it now.

        ``expires``: how long from now it is valid (None: until revoked)."""
        check_scope(scope)
        if expires is not None and not isinstance(expires, timedelta):
            raise AccountsError(f"expires must be a timedelta or None, not {type(expires).__name__}")
        actor = self._actor(actor)
        now = now or utcnow()
        token_id = "tok_" + secrets.token_hex(8)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = now + expires if expires is not None else None
        with self.engine.begin() as conn:
            if self._user_row(conn, user).disabled:
                raise AccountsError(f"user {user!r} is disabled: no new tokens")
            conn.execute(tokens_t.insert().values(id=token_id, user_name=user, scope=scope,
                                                  secret_sha256=hash_secret(secret), created_at=now,
                                                  expires_at=expires_at))
            self._audit(conn, actor, "token.create", token_id, now, user=user, scope=scope, expires_at=expires_at)
        return token_id, secret

    def revoke_token(self, token_id: str, *, actor: str) -> bool:
        """Revoke a token; False (nothing changes) if it was revoked already."""
        actor = self._actor(actor)
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(tokens_t.c.user_name, tokens_t.c.revoked_at)
                               .where(tokens_t.c.id == token_id)).first()
            if row is None:
                raise NotFound(f"no token {token_id!r}")
            if row.revoked_at is not None:
                return False
            conn.execute(tokens_t.update().where(tokens_t.c.id == token_id).values(revoked_at=now))
            self._audit(conn, actor, "token.revoke", token_id, now, user=row.user_name)
        return True

    def tokens(self, user: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
        """Tokens (of ``user``, or all), newest first, with their state; never a secret nor its hash."""
        now = now or utcnow()
        cols = [c for c in tokens_t.c if c.name != "secret_sha256"]
        q = sa.select(*cols).order_by(tokens_t.c.created_at.desc(), tokens_t.c.id)
        with self.engine.connect() as conn:
            if user is not None:
                self._user_row(conn, user)
                q = q.where(tokens_t.c.user_name == user)
            rows = conn.execute(q).all()
        out = []
        for r in rows:
            state = ("revoked" if r.revoked_at is not None else
                     "expired" if r.expires_at is not None and r.expires_at <= now else "active")
            out.append({"id": r.id, "user": r.user_name, "scope": r.scope, "state": state,
                        "created_at": r.created_at, "expires_at": r.expires_at, "revoked_at": r.revoked_at,
                        "last_used_at": r.last_used_at})
        return out

    def authenticate(self, secret: str, now: datetime | None = None) -> Session | None:
        """The session a token secret opens, or None: unknown, revoked or expired token, disabled user.

        Records the use (``last_used_at``, at most once per :data:`LAST_USED_RESOLUTION`)."""
        if not isinstance(secret, str) or not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        now = now or utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(tokens_t.c.id, tokens_t.c.scope, tokens_t.c.expires_at, tokens_t.c.revoked_at,
                          tokens_t.c.last_used_at, users_t.c.name, users_t.c.roles, users_t.c.disabled)
                .join(users_t, users_t.c.name == tokens_t.c.user_name)
                .where(tokens_t.c.secret_sha256 == hash_secret(secret))).first()
            if row is None or row.revoked_at is not None or row.disabled:
                return None
            if row.expires_at is not None and row.expires_at <= now:
                return None
            if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
                conn.execute(tokens_t.update().where(tokens_t.c.id == row.id).values(last_used_at=now))
            groups = self._groups_of(conn, row.name)
        principal = Principal.user(row.name, groups, _roles(row.roles))
        return Session(principal, row.id, row.scope, row.expires_at)

    # ------------------------------------------------------------------ audit

    def audit(self, limit: int = 100, target: str | None = None) -> list[dict[str, Any]]:
        """The latest changes, newest first."""
        q = sa.select(audit_t).order_by(audit_t.c.id.desc()).limit(max(0, int(limit)))
        if target is not None:
            q = q.where(audit_t.c.target == target)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [{"at": r.at, "actor": r.actor, "action": r.action, "target": r.target,
                 "detail": json.loads(r.detail or "{}")} for r in rows]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()
