"""Accounts of the REST API (users, groups, tokens, audit), the same tests on SQLite and on a real
PostgreSQL server that the session starts itself (tests/support/pg_server.py)."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from support.pg_server import pg_url_fixture

from mliplake.access import ROLES
from mliplake.accounts import (
    TOKEN_PREFIX,
    Accounts,
    AccountsError,
    NotFound,
    Session,
    accounts_url,
    parse_duration,
)
from mliplake.cli import main
from mliplake.settings import Settings

pg_url = pg_url_fixture()
OP = "test:operator"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty accounts database: a SQLite file, or a new schema-less database on the server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/accounts.sqlite"
    server_url = request.getfixturevalue("pg_url")
    name = "acc_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def acc(db_url):
    a = Accounts(db_url)
    yield a
    a.close()


def test_users_groups_and_a_token_that_authenticates(acc):
    acc.add_group("dft", "DFT people", actor=OP)
    acc.add_group("md", actor=OP)
    u = acc.add_user("alice", ["depositor", "reader"], ["dft"], "alice@example.org", actor=OP,
                     display_name="Alice A.")
    assert u["roles"] == ["depositor", "reader"] and u["groups"] == ["dft"] and not u["disabled"]
    assert u["created_at"].tzinfo is not None
    acc.add_user("bob", actor=OP)
    assert acc.add_member("md", "alice", actor=OP) is True
    assert acc.add_member("md", "alice", actor=OP) is False  # nothing changes
    assert [(x["name"], x["groups"]) for x in acc.users()] == [("alice", ["dft", "md"]), ("bob", [])]
    assert {g["name"]: g["members"] for g in acc.groups()} == {"dft": ["alice"], "md": ["alice"]}

    token_id, secret = acc.create_token("alice", "write", actor=OP)
    assert secret.startswith(TOKEN_PREFIX) and len(secret) >= 40
    s = acc.authenticate(secret)
    assert isinstance(s, Session) and s.token_id == token_id and s.scope == "write" and s.may_write
    p = s.principal
    assert (p.kind, p.name, p.groups, p.roles) == ("user", "alice", {"dft", "md"}, {"depositor", "reader"})
    assert p.can_deposit and not p.sees_everything
    [t] = acc.tokens("alice")
    assert t["id"] == token_id and t["state"] == "active" and t["last_used_at"] is not None
    assert "secret" not in str(t) and secret not in str(acc.tokens())

    # group and role changes show at the next authentication
    acc.remove_member("md", "alice", actor=OP)
    acc.set_roles("alice", ["admin"], actor=OP)
    p = acc.authenticate(secret).principal
    assert p.groups == {"dft"} and p.roles == {"admin"} and p.kind == "admin"

    _, read_secret = acc.create_token("bob", actor=OP)
    s = acc.authenticate(read_secret)
    assert s.scope == "read" and not s.may_write and s.principal.roles == {"reader"}


def test_revoked_expired_unknown_tokens_and_disabled_users_do_not_authenticate(acc):
    acc.add_user("carol", ["reader"], actor=OP)
    acc.add_user("dave", ["reader"], actor=OP)
    now = datetime.now(timezone.utc)
    tid, revoked = acc.create_token("carol", actor=OP)
    assert acc.authenticate(revoked) is not None
    assert acc.revoke_token(tid, actor=OP) is True
    assert acc.revoke_token(tid, actor=OP) is False
    assert acc.authenticate(revoked) is None

    _, past = acc.create_token("carol", expires=timedelta(seconds=-1), actor=OP)
    assert acc.authenticate(past) is None
    _, day = acc.create_token("carol", expires=timedelta(days=1), actor=OP)
    assert acc.authenticate(day) is not None
    assert acc.authenticate(day, now=now + timedelta(days=1, seconds=5)) is None  # the clock moved on
    states = {t["state"] for t in acc.tokens("carol")}
    assert states == {"revoked", "expired", "active"}

    _, dave = acc.create_token("dave", actor=OP)
    assert acc.authenticate(dave) is not None
    assert acc.disable_user("dave", actor=OP) is True
    assert acc.authenticate(dave) is None
    with pytest.raises(AccountsError, match="disabled"):
        acc.create_token("dave", actor=OP)
    acc.enable_user("dave", actor=OP)
    assert acc.authenticate(dave) is not None

    for bad in ("", "mlk_", "mlk_" + "x" * 43, revoked + "x", "nope", None, "mlk_" + "a" * 5000):
        assert acc.authenticate(bad) is None


def test_secrets_are_not_stored(acc, db_url, tmp_path):
    acc.add_user("erin", actor=OP)
    secrets = [acc.create_token("erin", scope, actor=OP)[1] for scope in ("read", "write")]
    assert all(acc.authenticate(s) for s in secrets)
    for s in secrets:
        with acc.engine.connect() as conn:
            for table in ("mlk_tokens", "mlk_audit", "mlk_users"):
                rows = conn.execute(sa.text(f"SELECT * FROM {table}")).all()
                assert rows and s not in repr(rows)
                assert s.removeprefix(TOKEN_PREFIX) not in repr(rows)
    if db_url.startswith("sqlite"):
        acc.close()  # every byte on disk, the WAL included
        files = [p for p in tmp_path.iterdir() if p.name.startswith("accounts.sqlite")]
        data = b"".join(p.read_bytes() for p in files)
        assert b"erin" in data  # the file is what we think it is
        for s in secrets:
            assert s.encode() not in data and s.removeprefix(TOKEN_PREFIX).encode() not in data


def test_every_change_is_audited_with_actor_and_time(acc):
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    acc.add_group("g1", actor="alice-admin")
    acc.add_user("frank", ["reader"], ["g1"], actor="alice-admin")
    acc.set_roles("frank", ["curator"], actor="bob-admin")
    acc.add_group("g2", actor=OP)
    acc.add_member("g2", "frank", actor=OP)
    acc.remove_member("g2", "frank", actor=OP)
    tid, secret = acc.create_token("frank", "write", timedelta(days=30), actor=OP)
    acc.revoke_token(tid, actor="carol-admin")
    acc.disable_user("frank", actor=OP)
    acc.authenticate(secret)  # not a change: no audit row
    log = acc.audit(100)
    assert [e["action"] for e in reversed(log)] == [
        "group.add", "user.add", "user.set_roles", "group.add", "group.add_member", "group.remove_member",
        "token.create", "token.revoke", "user.disable"]
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert all(before <= e["at"] <= after and e["actor"] for e in log)
    by_action = {e["action"]: e for e in log}
    assert by_action["user.add"]["actor"] == "alice-admin" and by_action["user.add"]["target"] == "frank"
    assert by_action["user.add"]["detail"]["groups"] == ["g1"]
    assert by_action["user.set_roles"]["detail"] == {"before": ["reader"], "after": ["curator"]}
    assert by_action["token.create"]["target"] == tid and by_action["token.create"]["detail"]["scope"] == "write"
    assert by_action["token.revoke"]["actor"] == "carol-admin"
    assert secret not in repr(log)
    assert len(acc.audit(2)) == 2
    with pytest.raises(AccountsError, match="actor"):
        acc.add_group("g3", actor="")


def test_bad_input_gives_one_clear_error(acc):
    acc.add_user("gina", actor=OP)
    cases = [
        (lambda: acc.add_user("gina", actor=OP), "user 'gina' already exists"),
        (lambda: acc.add_user("Bad Name", actor=OP), "user name 'Bad Name' is not valid"),
        (lambda: acc.add_user("../etc", actor=OP), "is not valid"),
        (lambda: acc.add_user("x" * 65, actor=OP), "is not valid"),
        (lambda: acc.add_user("hank", ["wizard"], actor=OP), "valid roles are " + ", ".join(ROLES)),
        (lambda: acc.add_user("hank", ["reader"], ["nogroup"], actor=OP), "no group 'nogroup'"),
        (lambda: acc.add_user("hank", email="not-an-address", actor=OP), "e-mail"),
        (lambda: acc.set_roles("gina", ["reader", "boss"], actor=OP), "unknown role 'boss'"),
        (lambda: acc.set_roles("nobody", ["reader"], actor=OP), "no user 'nobody'"),
        (lambda: acc.create_token("gina", "admin", actor=OP), "scope 'admin' is not one of read, write"),
        (lambda: acc.create_token("nobody", actor=OP), "no user 'nobody'"),
        (lambda: acc.revoke_token("tok_missing", actor=OP), "no token 'tok_missing'"),
        (lambda: acc.add_group("Bad!", actor=OP), "group name 'Bad!' is not valid"),
        (lambda: acc.remove_member("nogroup", "gina", actor=OP), "no group"),
    ]
    for call, message in cases:
        with pytest.raises(AccountsError) as e:
            call()
        assert message in str(e.value) and "\n" not in str(e.value), (message, str(e.value))
    acc.add_group("g", actor=OP)
    with pytest.raises(AccountsError, match="group 'g' already exists"):
        acc.add_group("g", actor=OP)
    with pytest.raises(NotFound, match="not a member"):
        acc.remove_member("g", "gina", actor=OP)
    assert [u["name"] for u in acc.users()] == ["gina"]  # nothing half-done


def test_tables_are_created_once_and_reopened(db_url):
    with Accounts(db_url) as a:
        a.add_user("ivan", actor=OP)
    with Accounts(db_url) as b:
        assert [u["name"] for u in b.users()] == ["ivan"]


def _cli(runner, lake, db_url, *args):
    return runner.invoke(main, ["--lake", str(lake), *args], env={"MLIPLAKE_ACCOUNTS": db_url, "USER": "root-op"})


def test_cli_users_groups_tokens(db_url, tmp_path):
    runner, lake = CliRunner(), tmp_path / "lake"
    ok = lambda *a: _cli(runner, lake, db_url, *a)  # noqa: E731
    for args in (["groups", "add", "dft"], ["users", "add", "jane", "--role", "depositor", "--role", "reader",
                                             "--group", "dft", "--email", "jane@example.org"],
                 ["users", "add", "kim"], ["groups", "add-member", "dft", "kim"]):
        r = ok(*args)
        assert r.exit_code == 0, r.output
    r = ok("users", "list")
    assert "jane" in r.output and "depositor,reader" in r.output and "kim" in r.output
    assert "jane,kim" in ok("groups", "list").output

    r = ok("tokens", "create", "jane", "--expires", "30d", "--scope", "write")
    assert r.exit_code == 0, r.output
    secret = r.output.rstrip("\n").splitlines()[-1]
    assert secret.startswith(TOKEN_PREFIX) and " " not in secret
    with Accounts(db_url) as acc:
        s = acc.authenticate(secret)
        assert s.principal.name == "jane" and s.principal.groups == {"dft"} and s.scope == "write"
        assert s.expires_at is not None and timedelta(days=29) < s.expires_at - datetime.now(timezone.utc)
        assert {e["actor"] for e in acc.audit()} == {"cli:root-op"}
        [t] = acc.tokens("jane")

    listed = ok("tokens", "list").output + ok("tokens", "list", "jane").output
    assert t["id"] in listed and secret not in listed and secret.removeprefix(TOKEN_PREFIX) not in listed
    r = ok("tokens", "revoke", t["id"])
    assert r.exit_code == 0 and "revoked" in r.output
    assert "revoked" in ok("tokens", "list", "jane").output
    r = ok("users", "disable", "kim")
    assert r.exit_code == 0 and "disabled" in r.output
    with Accounts(db_url) as acc:
        assert acc.authenticate(secret) is None
        assert acc.user("kim")["disabled"]


@pytest.mark.parametrize("args, message", [
    (["users", "add", "jane"], "Error: user 'jane' already exists"),
    (["users", "add", "Bad Name"], "Error: user name 'Bad Name' is not valid"),
    (["users", "add", "lee", "--role", "wizard"], "valid roles are reader, depositor, curator, admin"),
    (["users", "add", "lee", "--group", "nope"], "Error: no group 'nope'"),
    (["groups", "add-member", "nope", "jane"], "Error: no group 'nope'"),
    (["users", "disable", "nobody"], "Error: no user 'nobody'"),
    (["tokens", "create", "nobody"], "Error: no user 'nobody'"),
    (["tokens", "create", "jane", "--expires", "soon"], "Error: duration 'soon' is not like"),
    (["tokens", "revoke", "tok_nope"], "Error: no token 'tok_nope'"),
    (["tokens", "list", "nobody"], "Error: no user 'nobody'"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    db_url = f"sqlite:///{tmp_path}/accounts.sqlite"
    runner, lake = CliRunner(), tmp_path / "lake"
    assert _cli(runner, lake, db_url, "users", "add", "jane").exit_code == 0
    r = _cli(runner, lake, db_url, *args)
    assert r.exit_code != 0 and message in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_cli_bad_accounts_url_is_one_line(tmp_path):
    r = _cli(CliRunner(), tmp_path / "lake", "nosuchdb://x/y", "users", "list")
    assert r.exit_code != 0 and r.output.startswith("Error: accounts database") and \
        len(r.output.strip().splitlines()) == 1, r.output


def test_default_accounts_url(tmp_path):
    import mliplake

    settings = Settings(state_dir=str(tmp_path / "state"))
    lake = mliplake.Lake(tmp_path / "lake", settings=settings)
    url = accounts_url(settings, lake)
    assert url == f"sqlite:///{tmp_path}/lake/state/accounts.sqlite"
    with Accounts(url) as a:
        a.add_user("mo", actor=OP)
    assert Path(tmp_path, "lake", "state", "accounts.sqlite").exists()

    class S3Lake:  # what accounts_url reads of an S3 lake (no S3 needed to name the file)
        local, url, root = False, "s3://bucket/lake", "bucket/lake"

    s3 = accounts_url(settings, S3Lake())
    assert s3.startswith(f"sqlite:///{tmp_path}/state/") and s3.endswith("/accounts.sqlite")
    assert s3 != accounts_url(settings, type("Other", (S3Lake,), {"url": "s3://bucket/other"})())
    assert accounts_url(Settings(accounts="postgresql://u@h/db"), lake) == "postgresql+psycopg://u@h/db"
    assert accounts_url(Settings(accounts="sqlite:/x/a.sqlite"), None) == "sqlite:////x/a.sqlite"
    assert parse_duration("30d") == timedelta(days=30) and parse_duration("12h") == timedelta(hours=12)
