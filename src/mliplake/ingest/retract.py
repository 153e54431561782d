"""Retraction and visibility changes: curation acts that take effect everywhere at once.

A retraction deletes a deposit's rows from the current snapshot of every table in one commit,
so every view (and through them search, export, the catalogue and OPTIMADE) stops showing them
at once; the OpenSearch index, when there is one, is told in the same call.  The deposit record
stays, marked with who retracted it, when and why; earlier snapshots still hold the rows (what
existing training sets were built from) until they expire.  ``purge`` also deletes the raw files.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from mliplake.access import AccessError, make_policy, may_manage
from mliplake.storage.tables import arrow_rows

if TYPE_CHECKING:
    from mliplake.access import Policy
    from mliplake.lake import Lake


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _actor(lake: Lake) -> str:
    return lake.principal.name or lake.principal.kind


def retract(lake: Lake, deposit_id: str | None = None, dataset: str | None = None, reason: str = "",
            purge: bool = False) -> list[str]:
    """Retract one deposit, or every deposit of a dataset; returns the deposit ids retracted."""
    if bool(deposit_id) == bool(dataset):
        raise ValueError("retract one deposit (its id) or one dataset (--dataset NAME), not both or neither")
    if not reason.strip():
        raise ValueError("a retraction needs a reason (--reason \"...\"): it is kept in the record")
    if deposit_id:
        recs = [lake.record(deposit_id)]
    else:
        recs = [r for r in lake.records() if r["dataset"] == dataset and r.get("status") != "retracted"]
        if not recs:
            raise KeyError(f"no deposits of dataset {dataset!r} to retract")
    for ds in {r["dataset"] for r in recs}:
        if not may_manage(lake.policy(ds), lake.principal):
            raise AccessError(f"only the owner of dataset {ds!r}, a curator or an admin may retract from it")
    ids = [r["deposit_id"] for r in recs]
    at, who = _now(), _actor(lake)

    def work(cur: Any) -> None:
        cur.execute("CALL lake.set_commit_message(?, ?)", [who, f"retract {', '.join(ids)}: {reason}"])
        for dep in ids:
            cur.execute("DELETE FROM lake.configurations WHERE deposit_id = ?", [dep])
            cur.execute("DELETE FROM lake.quarantine WHERE deposit_id = ?", [dep])
            cur.execute("UPDATE lake.deposits SET retracted_at = ?, retracted_by = ?, retraction_reason = ?, "
                        "purged = ? WHERE deposit_id = ?", [at, who, reason, purge, dep])
        arrow_rows(cur, "audit", [{"at": at, "actor": who, "action": "purge" if purge else "retract", "target": dep,
                                   "detail": json.dumps({"reason": reason})} for dep in ids])

    lake.tables.transaction(work, serialise=True)
    if purge:
        for dep in ids:
            raw = lake.raw_dir(dep)
            if lake.fs.exists(raw):
                lake.fs.rm(raw, recursive=True)
    _tell_search_index(lake, ids)
    _refresh_catalogue(lake)
    return ids


def set_visibility(lake: Lake, dataset: str, visibility: str, groups: list[str] | None = None,
                   embargo_until: str | None = None, owner: str | None = None) -> Policy:
    """A new policy for a dataset, effective for the next request anywhere."""
    current = lake.policy(dataset)
    if current is None and dataset not in lake.tables.dataset_names():
        raise KeyError(f"no dataset {dataset!r}")
    if not may_manage(current, lake.principal):
        raise AccessError(f"only the owner of dataset {dataset!r}, a curator or an admin may change who sees it")
    policy = make_policy(dataset, visibility, owner if owner is not None else (current.owner if current else ""),
                         groups if groups is not None else (current.groups if current else ()),
                         embargo_until, updated_by=_actor(lake))

    def work(cur: Any) -> None:
        cur.execute("CALL lake.set_commit_message(?, ?)", [_actor(lake), f"visibility of {dataset}: {visibility}"])
        cur.execute("DELETE FROM lake.policies WHERE dataset = ?", [dataset])
        arrow_rows(cur, "policies", [policy.to_row()])
        arrow_rows(cur, "audit", [{"at": policy.updated_at, "actor": _actor(lake), "action": "visibility",
                                   "target": dataset, "detail": json.dumps(policy.to_row(), default=str)}])

    lake.tables.transaction(work, serialise=True)
    return policy


def _tell_search_index(lake: Lake, ids: list[str]) -> None:
    url = lake.settings.opensearch_url.get_secret_value()
    if not url:
        return
    from mliplake.search import connect, delete_deposit

    client = connect(url)
    for dep in ids:
        delete_deposit(client, dep)


def _refresh_catalogue(lake: Lake) -> None:
    from mliplake.catalogue import cards as catalogue

    if lake.tables.has_table("catalogue"):
        catalogue.refresh(lake)
