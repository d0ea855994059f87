"""The store on SQLite and on PostgreSQL (``store_url``): migrations, uniqueness,
aliases, operations."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from cumulo.domain.lifecycle import State
from cumulo.domain.limits import Limits
from cumulo.domain.models import Image, Instance, Network, Nic, Operation, OpStatus
from cumulo.errors import ConflictError, NotFoundError, StoreError
from cumulo.store.db import make_engine
from cumulo.store.repo import Store

FP = "b" * 64


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.put_image(Image(fingerprint=FP, os="busybox", command=["/bin/sh"], aliases=["busybox"]))
    yield s
    s.close()


def test_default_project_exists(store: Store) -> None:
    assert [p.name for p in store.list_projects()] == ["default"]


def test_reopen_database_keeps_data(store_url: str) -> None:
    url = store_url
    s = Store(url)
    s.put_image(Image(fingerprint=FP, aliases=["x"]))
    s.close()
    s2 = Store(url)  # migrations run again: must be a no-op
    assert s2.get_image("x").fingerprint == FP
    assert len(s2.list_projects()) == 1
    s2.close()


def test_times_read_back_as_aware_utc(store: Store) -> None:
    """SQLite keeps no zone and PostgreSQL answers in the session's: both read back UTC."""
    store.add_instance(Instance(project="default", name="t", type="container", image=FP))
    stamps = [store.get_instance("default", "t").created_at,
              store.list_projects()[0].created_at, store.get_image(FP).created_at]
    assert all(t is not None and t.tzinfo == UTC for t in stamps), stamps


def test_instance_name_unique_per_project(store: Store) -> None:
    inst = Instance(project="default", name="web", type="container", image=FP,
                    limits=Limits(memory=64 << 20))
    store.add_instance(inst)
    with pytest.raises(ConflictError, match="already exists"):
        store.add_instance(inst)
    store.ensure_project("other")
    store.add_instance(Instance(project="other", name="web", type="container", image=FP))
    assert len(store.list_instances()) == 2
    assert store.get_instance("default", "web").limits.memory == 64 << 20


def test_instance_update_and_delete(store: Store) -> None:
    store.add_instance(Instance(project="default", name="a", type="container", image=FP))
    got = store.update_instance("default", "a", state=State.RUNNING, exit_code=None)
    assert got.state == State.RUNNING
    store.delete_instance("default", "a")
    with pytest.raises(NotFoundError, match="instance 'a' not found"):
        store.get_instance("default", "a")


def test_a_new_instance_gets_a_host_id_no_renamed_instance_kept(store: Store) -> None:
    """A new instance's derived host id (project_name) is taken only by one that a
    renamed instance kept, or is one such an id was made from (project_name_N): then it
    gets the first free project_name_N, in the insert's own transaction."""
    def add(project: str, name: str) -> str:
        return store.add_instance(Instance(project=project, name=name, type="container",
                                           image=FP)).host_id

    store.ensure_project("other")
    assert add("default", "a") == "default_a"
    assert add("other", "b") == "other_b"
    assert add("default", "b") == "default_b"
    store.rename_instance("default", "b", "c")   # keeps default_b
    assert add("default", "b") == "default_b_2"
    assert store.get_instance("default", "b").host_id == "default_b_2"
    store.rename_instance("default", "b", "d")   # keeps default_b_2
    assert add("default", "bb") == "default_bb"
    store.rename_instance("default", "bb", "e")   # keeps default_bb: not one of b's
    store.add_instance(Instance(project="default", name="f", type="container", image=FP,
                                fixed_host_id="defaultxb"))   # '_' is no LIKE wildcard
    assert add("default", "b") == "default_b_3"
    assert add("other", "c") == "other_c"


def test_an_exec_reads_four_columns_of_its_instance(store: Store) -> None:
    store.add_instance(Instance(project="default", name="a", type="container", image=FP,
                                state=State.RUNNING, location="m1"))
    store.add_instance(Instance(project="default", name="b", type="vm", image=FP))
    store.rename_instance("default", "b", "c")
    assert store.exec_target("default", "a") == ("container", "default_a", State.RUNNING,
                                                 "m1")
    assert store.exec_target("default", "c") == ("vm", "default_b", State.CREATING, None)
    with pytest.raises(NotFoundError, match="instance 'b'"):
        store.exec_target("default", "b")
    with pytest.raises(NotFoundError, match="project 'nope'"):
        store.exec_target("nope", "a")


def test_a_launch_reads_its_image_and_project_at_once(store: Store) -> None:
    store.ensure_project("other")
    image, project, net = store.launch_reads("busybox", "other")   # default's images
    assert (image.fingerprint, image.aliases, project.name, net) == (FP, [], "other", False)
    assert store.get_image("busybox").aliases == ["busybox"]
    store.add_network(Network(project="other", name="lan", subnet="10.9.0.0/24",
                              gateway="10.9.0.1", bridge="cu-b00000009"))
    assert store.launch_reads("busybox", "other", "lan")[2]
    assert not store.launch_reads("busybox", "other", "wan")[2]
    assert not store.launch_reads("busybox", "default", "lan")[2]   # other's, not default's
    with pytest.raises(NotFoundError, match="image 'nope'"):
        store.launch_reads("nope", "default")
    with pytest.raises(NotFoundError, match="project 'nope'"):
        store.launch_reads("busybox", "nope", "lan")


def test_image_by_alias_fingerprint_and_prefix(store: Store) -> None:
    assert store.get_image("busybox").fingerprint == FP
    assert store.get_image(FP).aliases == ["busybox"]
    assert store.get_image(FP[:12]).fingerprint == FP
    with pytest.raises(NotFoundError):
        store.get_image(FP[:6])  # too short to be a prefix
    assert store.get_image(FP[:12].upper()).fingerprint == FP  # the same on both engines
    with pytest.raises(NotFoundError):
        store.get_image("b" * 11 + "_")  # LIKE wildcards are plain characters
    store.put_image(Image(fingerprint="b" * 20 + "c" * 44))
    with pytest.raises(ConflictError, match="ambiguous"):
        store.get_image("b" * 12)


def test_image_users(store: Store) -> None:
    store.add_instance(Instance(project="default", name="u", type="container", image=FP))
    assert store.image_users(FP) == ["default/u"]


def test_unknown_project_and_image(store: Store) -> None:
    with pytest.raises(NotFoundError, match="project"):
        store.list_instances("nope")
    with pytest.raises(NotFoundError, match="image"):
        store.add_instance(Instance(project="default", name="x", type="c", image="f" * 64))


def test_operations(store: Store) -> None:
    store.add_operation(Operation(id="op1", description="test"))
    store.update_operation("op1", status=OpStatus.RUNNING, progress=0.5, message="half")
    assert store.get_operation("op1").progress == 0.5
    assert store.fail_unfinished_operations("daemon stopped") == 1
    op = store.get_operation("op1")
    assert op.status == OpStatus.FAILURE and op.error == "daemon stopped"


def test_a_launch_records_its_instance_and_operation_in_one_commit(store: Store) -> None:
    """``add_instance(op=)`` writes both or neither; ``state_write`` goes into the
    operation's end and fails with it (an unknown instance: neither changes)."""
    now = datetime.now(UTC)
    op = Operation(id="op1", description="launch instance a", created_at=now, updated_at=now)
    store.add_instance(Instance(project="default", name="a", type="container", image=FP), op)
    assert store.get_operation("op1").status == OpStatus.PENDING
    with pytest.raises(ConflictError, match="already exists"):
        store.add_instance(Instance(project="default", name="a", type="container", image=FP),
                           Operation(id="op2", description="launch instance a"))
    with pytest.raises(NotFoundError):
        store.get_operation("op2")
    ended = replace(op, status=OpStatus.SUCCESS, progress=1.0, message="m" * 300,
                    resources={"made": "it"})
    with pytest.raises(NotFoundError, match="instance 'b' not found"):
        store.end_operation(ended, also=store.state_write("default", "b", State.RUNNING))
    assert store.get_operation("op1").status == OpStatus.PENDING
    with pytest.raises(NotFoundError, match="operation 'op3' not found"):
        store.end_operation(replace(ended, id="op3"))
    store.ensure_project("other")   # the same name in another project is not touched
    store.add_instance(Instance(project="other", name="a", type="container", image=FP))
    got = store.end_operation(ended, also=store.state_write("default", "a", State.RUNNING))
    kept = store.get_operation("op1")
    assert (kept.status, kept.progress, kept.resources, len(kept.message)) == (
        OpStatus.SUCCESS, 1.0, {"made": "it"}, 255)
    assert got == kept
    assert store.get_instance("default", "a").state == State.RUNNING
    assert store.get_instance("other", "a").state == State.CREATING


def test_a_new_instance_is_returned_as_it_would_read_back(store: Store) -> None:
    """``add_instance`` does not read its rows back: what it returns must be the same."""
    store.add_network(Network(project="default", name="blue", subnet="10.1.0.0/24",
                              gateway="10.1.0.1", bridge="cu-b00000001"))
    made = store.add_instance(Instance(
        project="default", name="web", type="container", image=FP, state=State.CREATING,
        limits=Limits(cpu=1.5, memory=64 << 20), command=["sleep", "9"],
        options={"a": "b"}, root={"pool": "default", "copy": False, "size": None},
        ephemeral=True, fixed_host_id="default_web_2",
        nics=[Nic(network="blue", index=0, mac="0a:ce:00:00:00:01", ip="10.1.0.2",
                  host_name="cu-v00000001", groups=["g"], bandwidth={"ingress": 8})]))
    assert made == store.get_instance("default", "web")


def test_database_from_a_newer_version_is_a_clear_error(store_url: str) -> None:
    url = store_url
    Store(url).close()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="written by a newer version"):
        Store(url)


def test_upgrade_from_0001_keeps_instances_and_adds_networks(store_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from cumulo.domain.models import Network, Nic
    from cumulo.store.db import MIGRATIONS

    url = store_url
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    engine.dispose()
    s = Store(url)  # upgrades to head
    s.put_image(Image(fingerprint=FP, aliases=["x"]))
    s.add_network(Network(project="default", name="blue", subnet="10.1.0.0/24",
                          gateway="10.1.0.1", bridge="cu-b00000001"))
    inst = s.add_instance(Instance(
        project="default", name="web", type="container", image=FP,
        nics=[Nic(network="blue", index=0, mac="0a:ce:00:00:00:01", ip="10.1.0.2",
                  host_name="cu-v00000001")]))
    assert [n.ip for n in inst.nics] == ["10.1.0.2"]
    with pytest.raises(ConflictError, match="in use"):
        s.delete_network("default", "blue")
    s.delete_instance("default", "web")
    s.delete_network("default", "blue")
    assert s.list_networks() == []
    s.close()


@pytest.fixture(params=["memory", "database"])
def thread_url(request: pytest.FixtureRequest, store_url: str) -> str:
    if request.param == "memory":
        if not store_url.startswith("sqlite"):
            pytest.skip("memory is a SQLite case")
        return "sqlite://"
    return store_url


def test_threads_share_one_store_without_errors(thread_url: str) -> None:
    """Operations write from worker threads while the API thread reads: the in-memory
    store has one connection, so its sessions must take turns."""
    store = Store(thread_url)
    ops = [store.add_operation(Operation(id=f"op{i}", description="x")) for i in range(4)]
    errors: list[BaseException] = []

    def hammer(op: Operation) -> None:
        try:
            for n in range(150):
                store.update_operation(op.id, progress=n / 150, message=str(n))
                store.get_operation(ops[(n + 1) % 4].id)
        except BaseException as err:  # noqa: BLE001 - collected and reported below
            errors.append(err)

    threads = [threading.Thread(target=hammer, args=(op,)) for op in ops]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert all(store.get_operation(op.id).message == "149" for op in ops)
    store.close()


def test_plain_postgresql_url_goes_through_psycopg_and_hides_the_password() -> None:
    from cumulo.store.db import parse_url

    for plain in ("postgresql://u:pw@/db?host=/run/x", "postgres://u:pw@/db?host=/run/x"):
        assert parse_url(plain).drivername == "postgresql+psycopg"
    with pytest.raises(StoreError, match=r"cannot use the database postgresql\+psycopg://"
                                         r"u:\*\*\*@/db.*No such file") as err:
        Store("postgresql://u:pw@/db?host=/nonexistent-cumulo")
    assert "pw" not in str(err.value)
    with pytest.raises(StoreError, match="not a database URL: 'nonsense'"):
        Store("nonsense")
