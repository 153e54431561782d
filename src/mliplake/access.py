"""Who sees what: the one place that decides.

A :class:`Principal` is whoever asks: anonymous, a user with groups and roles, an admin, or
the local owner of a lake (the library's default, so one scientist on a laptop sees all of
their lake).  Every dataset has a :class:`Policy`: public, private (its owner and the named
groups), or embargoed until a date (then public, with no job needed: the date is compared at
each request).  Every read path asks :func:`visible_datasets` (through the query session that
builds its views from it), so a rule changed here changes everywhere at once.

Datasets with no policy row are public: that is how a deposit without ``visibility`` behaves.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Literal

from mliplake.core.sql import quote_list

Visibility = Literal["public", "private", "embargoed"]
VISIBILITIES: tuple[str, ...] = ("public", "private", "embargoed")
ROLES: tuple[str, ...] = ("reader", "depositor", "curator", "admin")
Kind = Literal["anonymous", "user", "admin", "owner"]


class AccessError(PermissionError):
    """The principal may not do this (the message says what, never what it cannot see)."""


@dataclass(frozen=True)
class Principal:
    """Whoever asks.  ``owner`` is the local owner of a lake: everything, like ``admin``."""

    kind: Kind = "owner"
    name: str = ""
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    @classmethod
    def anonymous(cls) -> Principal:
        return cls("anonymous")

    @classmethod
    def user(cls, name: str, groups: Iterable[str] = (), roles: Iterable[str] = ("reader",)) -> Principal:
        if not name:
            raise ValueError("a user needs a name")
        roles = frozenset(roles)
        return cls("admin" if "admin" in roles else "user", name, frozenset(groups), roles)

    @classmethod
    def admin(cls, name: str = "admin") -> Principal:
        return cls("admin", name, frozenset(), frozenset({"admin"}))

    @classmethod
    def local_owner(cls) -> Principal:
        return cls("owner", "local")

    @property
    def sees_everything(self) -> bool:
        return self.kind in ("admin", "owner")

    @property
    def is_curator(self) -> bool:
        return self.sees_everything or "curator" in self.roles

    @property
    def can_deposit(self) -> bool:
        return self.sees_everything or bool({"depositor", "curator"} & self.roles)

    def cache_key(self) -> tuple[Any, ...]:
        return (self.kind, self.name, tuple(sorted(self.groups)), tuple(sorted(self.roles)))


LOCAL_OWNER = Principal.local_owner()
ANONYMOUS = Principal.anonymous()


@dataclass(frozen=True)
class Policy:
    """Who may see a dataset."""

    dataset: str
    visibility: Visibility = "public"
    owner: str = ""
    groups: tuple[str, ...] = ()
    embargo_until: date | None = None
    updated_at: str = ""
    updated_by: str = ""

    def effective(self, today: date | None = None) -> Visibility:
        """``embargoed`` turns ``public`` on its date, with nobody having to do anything."""
        if self.visibility == "embargoed":
            today = today or datetime.now(timezone.utc).date()
            if self.embargo_until is not None and self.embargo_until <= today:
                return "public"
        return self.visibility

    def to_row(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "visibility": self.visibility, "owner": self.owner,
                "groups": list(self.groups), "embargo_until": self.embargo_until,
                "updated_at": self.updated_at, "updated_by": self.updated_by}


def make_policy(dataset: str, visibility: str = "public", owner: str = "", groups: Iterable[str] = (),
                embargo_until: str | date | None = None, updated_by: str = "") -> Policy:
    """A validated policy: names the bad field, like every error the user sees."""
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility {visibility!r} is not one of {', '.join(VISIBILITIES)}")
    until = _date(embargo_until)
    if visibility == "embargoed" and until is None:
        raise ValueError("an embargoed dataset needs an embargo date (embargo_until: YYYY-MM-DD)")
    groups = tuple(sorted({str(g) for g in groups if str(g)}))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Policy(dataset, visibility, owner, groups, until if visibility == "embargoed" else None, now,  # type: ignore[arg-type]
                  updated_by)


def _date(value: str | date | None) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"embargo date {value!r} is not a date (YYYY-MM-DD)") from None


def may_see(policy: Policy | None, who: Principal, today: date | None = None) -> bool:
    """The rule itself."""
    if policy is None or who.sees_everything:
        return True
    if policy.effective(today) == "public":
        return True
    if who.kind == "anonymous":
        return False
    return who.name == policy.owner or bool(who.groups & set(policy.groups))


def may_manage(policy: Policy | None, who: Principal) -> bool:
    """Changing visibility or retracting: the dataset's owner, a curator or an admin."""
    if who.is_curator:
        return True
    return policy is not None and who.kind == "user" and who.name == policy.owner


def visible_datasets(datasets: Iterable[str], policies: dict[str, Policy], who: Principal,
                     today: date | None = None) -> list[str] | None:
    """The datasets ``who`` may see, or None for all of them (no restriction to apply)."""
    if who.sees_everything:
        return None
    return sorted(d for d in set(datasets) if may_see(policies.get(d), who, today))


@dataclass
class Scope:
    """What one request may see: the datasets (None: all) and who asks."""

    principal: Principal = field(default_factory=Principal.local_owner)
    datasets: list[str] | None = None
    # a table of one column ``dataset`` holding ``datasets``: predicates become a semi-join on it,
    # since a literal list of thousands of names costs DuckDB more to parse and push into every
    # scan than the query itself
    relation: str | None = None

    def allows(self, dataset: str) -> bool:
        return self.datasets is None or dataset in self.datasets

    def sql_predicate(self, column: str = "dataset") -> str:
        """A SQL predicate restricting ``column`` to the visible datasets (literals, safely quoted)."""
        if self.datasets is None:
            return "TRUE"
        if not self.datasets:
            return "FALSE"
        if self.relation:
            return f"{column} IN (SELECT dataset FROM {self.relation})"
        return f"{column} IN ({quote_list(self.datasets or [])})"

    def sql_row_predicate(self, column: str = "dataset") -> str:
        """The same restriction as :meth:`sql_predicate`, as a per-row test rather than a join:
        DuckDB keeps the order rows are stored in only through plans without a join, and a
        streamed export must come out in the same order every time (a resumed download skips
        what it already has)."""
        if self.datasets is None:
            return "TRUE"
        if not self.datasets:
            return "FALSE"
        return f"list_contains([{quote_list(self.datasets or [])}], {column})"

    def sql_all_visible(self, column: str) -> str:
        """A SQL predicate: every dataset in the list ``column`` is visible (a model inherits the
        strictest visibility of the data it was trained on)."""
        if self.datasets is None:
            return "TRUE"
        if self.relation and self.datasets:
            return f"list_has_all((SELECT list(dataset) FROM {self.relation}), coalesce({column}, []))"
        inner = self.sql_predicate("d")
        return f"len(list_filter(coalesce({column}, []), lambda d: NOT ({inner}))) = 0"

    def relation_sql(self) -> str:
        """The statement that makes ``relation`` in a database of its own (a sandbox worker's)."""
        names = quote_list(self.datasets or [])
        return (f"CREATE TABLE IF NOT EXISTS {self.relation} AS "
                f"SELECT unnest([{names}]::VARCHAR[]) AS dataset")

    def key(self) -> tuple[str, ...] | None:
        return None if self.datasets is None else tuple(self.datasets)
