"""The store's contract on both engines (``store_url``: a SQLite file, a PostgreSQL database
on the suite's throwaway server): migrations match the tables, and volumes, security
groups, forwards, identities and remotes read back what was written, conflicts included."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from cumulo.domain.acl import AclRule, SecurityGroup
from cumulo.domain.models import Image, Instance, Network, Nic
from cumulo.domain.volumes import Volume
from cumulo.errors import ConflictError, NotFoundError
from cumulo.store.db import MIGRATIONS, make_engine
from cumulo.store.firewall import FirewallStore, Forward
from cumulo.store.hosts import HostStore, Remote
from cumulo.store.identities import CLIENT, REMOTE, IdentityStore, digest
from cumulo.store.repo import Store
from cumulo.store.tables import Base

FP = "c" * 64


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.put_image(Image(fingerprint=FP, aliases=["img"], size=5 << 30))
    s.add_network(Network(project="default", name="blue", subnet="10.9.0.0/24",
                          gateway="10.9.0.1", bridge="cu-b0000beef", isolated=False))
    s.add_instance(Instance(project="default", name="web", type="container", image=FP,
                            privileged=True, nics=[Nic(
                                network="blue", index=0, mac="0a:ce:00:00:00:09",
                                ip="10.9.0.9", host_name="cu-v0000beef")]))
    yield s
    s.close()


@pytest.fixture
def other_url(store_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second empty database on the same engine as ``store_url``."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    server = request.getfixturevalue("pg_server")
    url: str = server.create_database()
    yield url
    server.drop_database(url)


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _alembic(url: str, *steps: tuple[str, str]) -> None:
    engine = make_engine(url)
    cfg = _config()
    try:
        for verb, rev in steps:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                getattr(command, verb)(cfg, rev)
    finally:
        engine.dispose()


def test_migrations_match_the_tables(store_url: str) -> None:
    """Upgrade head on an empty database, then autogenerate finds nothing to add: the
    revisions build exactly what tables.py declares (types included)."""
    _alembic(store_url, ("upgrade", "head"))
    engine = make_engine(store_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def _schema(url: str) -> dict[str, Any]:
    """Every table's columns, keys, indexes and unique constraints, as the engine reports
    them (server defaults left out: revisions give them to fill added columns of old rows)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            return {t: (
                sorted((c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)),
                insp.get_pk_constraint(t)["constrained_columns"],
                sorted((f["constrained_columns"], f["referred_table"],
                        f["referred_columns"], (f.get("options") or {}).get("ondelete"))
                       for f in insp.get_foreign_keys(t)),
                sorted((i["column_names"], bool(i["unique"])) for i in insp.get_indexes(t)),
                sorted(u["column_names"] for u in insp.get_unique_constraints(t)))
                for t in sorted(insp.get_table_names())}
    finally:
        engine.dispose()


def test_a_new_database_gets_the_schema_the_revisions_build(store_url: str,
                                                            other_url: str) -> None:
    """A fresh store is made from tables.py at once and stamped (not every revision
    replayed): the same tables, keys and indexes as the revisions build, and later
    revisions apply to it as to a replayed one."""
    Store(store_url).close()
    _alembic(other_url, ("upgrade", "head"))
    assert _schema(store_url) == _schema(other_url)
    engine = make_engine(store_url)
    try:
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == \
                ScriptDirectory.from_config(_config()).get_current_head()
    finally:
        engine.dispose()
    _alembic(store_url, ("downgrade", "-1"), ("upgrade", "head"))
    Store(store_url).close()


def test_migrations_go_down_and_up_again(store_url: str) -> None:
    _alembic(store_url, ("upgrade", "head"), ("downgrade", "base"), ("upgrade", "head"))
    Store(store_url).close()  # the rebuilt schema serves a store


def test_migration_tokens_become_remote_identities(store_url: str) -> None:
    """A host's tokens of before 0009 keep working: identities of kind remote."""
    _alembic(store_url, ("upgrade", "0008"))
    engine = make_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tokens (name, sha256, created_at) VALUES"
                              " ('from-a', :h, CURRENT_TIMESTAMP)"), {"h": digest("s3cret")})
    finally:
        engine.dispose()
    store = Store(store_url)
    try:
        ident = IdentityStore(store.db).by_token("s3cret")
        assert ident is not None and (ident.name, ident.kind, ident.admin, ident.roles) == (
            "from-a", REMOTE, False, {})
    finally:
        store.close()


def test_rows_read_back_typed(store: Store) -> None:
    """Booleans, big integers and JSON come back as written on both engines."""
    inst = store.get_instance("default", "web")
    assert inst.privileged is True
    assert inst.nics[0].ip == "10.9.0.9" and inst.nics[0].groups == []
    assert store.get_network("default", "blue").isolated is False
    assert store.get_image("img").size == 5 << 30


def test_volumes(store: Store) -> None:
    from cumulo.store.volumes import VolumeStore

    vols = VolumeStore(store.db)
    vols.add(Volume(project="default", name="data", pool="default", size=8 << 30))
    with pytest.raises(ConflictError, match="already exists"):
        vols.add(Volume(project="default", name="data", pool="default", size=1))
    got = vols.attach("default", "data", "web", "/data", shared=True)
    assert got.size == 8 << 30 and [(a.instance, a.shared) for a in got.attachments] == [
        ("web", True)]
    assert [v.name for v in vols.of_instance("default", "web")] == ["data"]
    assert vols.detach("default", "data", "web").attachments == []
    vols.delete("default", "data")
    with pytest.raises(NotFoundError):
        vols.get("default", "data")


def test_security_groups_and_forwards(store: Store) -> None:
    fw = FirewallStore(store.db)
    rules = [AclRule(protocol="tcp", ports=(80, 443), cidr="10.0.0.0/8"),
             AclRule(direction="egress", group="web")]
    fw.add_group(SecurityGroup(project="default", name="web", rules=rules))
    with pytest.raises(ConflictError, match="already exists"):
        fw.add_group(SecurityGroup(project="default", name="web"))
    assert fw.get_group("default", "web").rules == rules
    assert fw.set_nic_groups("default", "web", None, add="web") == 1
    assert fw.group_users("default", "web") == ["web/eth0"]
    assert fw.set_nic_bandwidth("default", "web", "blue", {"ingress": 1000}) == ["cu-v0000beef"]
    assert store.get_instance("default", "web").nics[0].bandwidth == {"ingress": 1000}
    fwd = Forward(project="default", network="blue", listen_address="127.0.0.1",
                  listen_port=8080, protocol="tcp", instance="web", target_port=80)
    fw.add_forward(fwd)
    with pytest.raises(ConflictError, match="already forwarded"):
        fw.add_forward(fwd)
    assert [(f.target_ip, f.target_port) for f in fw.list_forwards()] == [("10.9.0.9", 80)]


def test_identities_and_remotes(store: Store) -> None:
    hosts, ids = HostStore(store.db), IdentityStore(store.db)
    ids.add("peer", REMOTE, "s3cret")
    with pytest.raises(ConflictError, match="exists"):
        ids.add("peer", CLIENT, "other")
    assert ids.by_token("s3cret") is not None and ids.by_token("S3CRET") is None
    ids.add("ann", CLIENT, "t2", roles={"a": "viewer"})
    assert ids.grant("ann", "b", "operator").roles == {"a": "viewer", "b": "operator"}
    assert ids.by_token("t2").roles == {"a": "viewer", "b": "operator"}  # type: ignore[union-attr]
    assert ids.revoke("ann").name == "ann" and ids.by_token("t2") is None
    hosts.add_remote(Remote("b", "https://127.0.0.1:8443", "tok"))
    with pytest.raises(ConflictError, match="already exists"):
        hosts.add_remote(Remote("b", "https://127.0.0.1:8443", "tok"))
    assert [r.name for r in hosts.list_remotes()] == ["b"]


def test_names_are_case_sensitive(store: Store) -> None:
    store.add_instance(Instance(project="default", name="Web", type="container", image=FP))
    assert {i.name for i in store.list_instances()} == {"web", "Web"}
    with pytest.raises(NotFoundError):
        store.get_image("IMG")


def test_one_of_two_racing_inserts_wins(store: Store) -> None:
    """Two threads add the same instance name at once: one row, one ConflictError."""
    results: list[str] = []
    start = threading.Barrier(2)

    def add() -> None:
        start.wait(10)
        try:
            store.add_instance(Instance(project="default", name="race", type="container",
                                        image=FP))
            results.append("added")
        except ConflictError:
            results.append("conflict")

    threads = [threading.Thread(target=add) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["added", "conflict"]
    assert [i.name for i in store.list_instances()].count("race") == 1


def test_api_over_the_store(store_url: str, tmp_path: Path) -> None:
    """The API on services whose store is on each engine: launch, list, a conflict, times
    in UTC, delete (fake driver: no kernel objects)."""
    from fastapi.testclient import TestClient

    from cumulo.api.app import create_app
    from tests.unit.conftest import fake_services, launch

    with fake_services(tmp_path, store_url) as svc, TestClient(create_app(svc)) as api:
        launch(api, "web", limits={"memory": "64MiB"})
        rows = api.get("/1.0/instances").json()
        assert [(r["name"], r["state"]) for r in rows] == [("web", "running")]
        assert rows[0]["created_at"].endswith(("+00:00", "Z"))
        again = api.post("/1.0/instances", json={"name": "web", "image": "testimg"})
        assert again.status_code == 409 and "already exists" in again.text
        assert api.delete("/1.0/instances/web", params={"force": True}).status_code in (
            200, 202)


def test_concurrent_group_changes_on_one_nic_are_all_kept(store: Store) -> None:
    """Read-modify-write of a NIC's JSON list: SQLite serializes writers, PostgreSQL's
    read committed would lose updates unless the rows are locked (FOR UPDATE)."""
    fw = FirewallStore(store.db)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def add(group: str) -> None:
        start.wait(10)
        try:
            fw.set_nic_groups("default", "web", None, add=group)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=add, args=(f"g{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:2]
    assert sorted(store.get_instance("default", "web").nics[0].groups) == [
        f"g{i}" for i in range(6)]
