"""Projects in the store on both engines (a SQLite file, a PostgreSQL database): names
unique per project, deletion only when empty, and quotas that hold when creates race,
from threads and from two stores (two daemons) on one database."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from cumulo.domain.limits import Limits
from cumulo.domain.models import Image, Instance, Network
from cumulo.domain.volumes import Volume
from cumulo.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    QuotaExceededError,
)
from cumulo.store.db import MIGRATIONS, make_engine
from cumulo.store.identities import IdentityStore
from cumulo.store.repo import Store
from cumulo.store.volumes import VolumeStore

FP = "d" * 64


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.put_image(Image(fingerprint=FP, aliases=["img"]))
    s.projects.create("a")
    s.projects.create("b")
    yield s
    s.close()


def _inst(project: str, name: str, type_: str = "container", **limits: object) -> Instance:
    return Instance(project=project, name=name, type=type_, image=FP,
                    limits=Limits.from_dict(dict(limits)))


def test_same_name_in_two_projects(store: Store) -> None:
    store.add_instance(_inst("a", "web"))
    store.add_instance(_inst("b", "web"))
    assert [i.project for i in store.list_instances()] == ["a", "b"]
    with pytest.raises(ConflictError, match="already exists"):
        store.add_instance(_inst("a", "web"))
    store.delete_instance("a", "web")
    with pytest.raises(NotFoundError):
        store.get_instance("a", "web")
    assert store.get_instance("b", "web").project == "b"


def test_delete_refused_while_the_project_holds_anything(store: Store) -> None:
    store.add_instance(_inst("a", "web"))
    store.add_network(Network(project="a", name="net", subnet="10.8.0.0/24",
                              gateway="10.8.0.1", bridge="cu-b0000a001"))
    with pytest.raises(ConflictError) as err:
        store.projects.delete("a")
    assert str(err.value) == "project 'a' is not empty: it holds 1 instance, 1 network"
    store.delete_instance("a", "web")
    store.delete_network("a", "net")
    idents = IdentityStore(store.db)
    idents.add("tenant", "client", "secret-token", roles={"a": "operator", "b": "viewer"})
    store.projects.delete("a")
    assert [p.name for p in store.projects.list()] == ["b", "default"]
    assert idents.get("tenant").roles == {"b": "viewer"}   # none carries over to a new "a"
    with pytest.raises(InvalidInputError, match="cannot be deleted"):
        store.projects.delete("default")


def test_twenty_racing_creates_against_a_quota_of_five(store_url: str, store: Store) -> None:
    """Two stores on one database (two daemons sharing it), ten threads each: exactly five
    instances, fifteen refusals that name the limit."""
    store.projects.update("a", {"limits.instances": "5"})
    other = Store(store_url)
    made: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(20)

    def create(s: Store, i: int) -> None:
        start.wait()
        try:
            s.add_instance(_inst("a", f"i{i}"))
            made.append(f"i{i}")
        except QuotaExceededError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=create, args=(store if i % 2 else other, i))
               for i in range(20)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        other.close()
    assert len(made) == 5 and len(refused) == 15
    assert set(refused) == {"project 'a' is over quota: limits.instances=5, in use 5,"
                            " this needs 1 more"}
    assert len(store.list_instances("a")) == 5


def test_usage_after_deletes_and_limits_below_usage(store: Store) -> None:
    store.projects.update("a", {"limits.instances": "2", "limits.memory": str(1 << 30),
                                "limits.virtual-machines": "1"})
    store.add_instance(_inst("a", "x", memory=256 << 20))
    store.add_instance(_inst("a", "y", "vm", memory=512 << 20))
    u = store.projects.usage("a")
    assert (u.instances, u.containers, u.virtual_machines, u.memory) == (2, 1, 1, 768 << 20)
    with pytest.raises(QuotaExceededError, match="limits.instances=2, in use 2"):
        store.add_instance(_inst("a", "z", memory=1 << 20))
    with pytest.raises(InvalidInputError, match="already uses 2"):
        store.projects.update("a", {"limits.instances": "1"})
    store.delete_instance("a", "x")
    assert store.projects.usage("a").instances == 1
    with pytest.raises(QuotaExceededError, match="limits.virtual-machines=1, in use 1"):
        store.add_instance(_inst("a", "v2", "vm", memory=1 << 20))
    with pytest.raises(QuotaExceededError,
                       match=r"limits.memory=1.0GiB, in use 512.0MiB, this needs 768.0MiB"):
        store.add_instance(_inst("a", "big", memory=768 << 20))
    with pytest.raises(QuotaExceededError, match="must declare memory"):
        store.add_instance(_inst("a", "undeclared"))
    with pytest.raises(QuotaExceededError, match="limits.memory"):   # a live change too
        store.update_instance("a", "y", limits=Limits(memory=2 << 30))
    store.add_instance(_inst("a", "z", memory=256 << 20))
    assert store.projects.usage("a").memory == 768 << 20


def test_disk_quota_counts_roots_and_volumes(store: Store) -> None:
    volumes = VolumeStore(store.db)
    store.projects.update("a", {"limits.disk": str(3 << 30)})
    inst = _inst("a", "web")
    inst.root = {"pool": "default", "copy": False, "size": 1 << 30}
    store.add_instance(inst)
    volumes.add(Volume(project="a", name="data", pool="default", size=1 << 30))
    with pytest.raises(QuotaExceededError, match="limits.disk=3.0GiB, in use 2.0GiB"):
        volumes.add(Volume(project="a", name="more", pool="default", size=2 << 30))
    with pytest.raises(QuotaExceededError, match="limits.disk"):
        volumes.set_size("a", "data", 3 << 30)
    volumes.set_size("a", "data", 2 << 30)
    assert store.projects.usage("a").disk == 3 << 30
    volumes.add(Volume(project="b", name="more", pool="default", size=2 << 30))  # not a's


def test_networks_quota(store: Store) -> None:
    store.projects.update("b", {"limits.networks": "0"})
    with pytest.raises(QuotaExceededError, match="limits.networks=0, in use 0"):
        store.add_network(Network(project="b", name="n", subnet="10.7.0.0/24",
                                  gateway="10.7.0.1", bridge="cu-b0000b001"))
    assert store.list_networks("b") == []


def test_images_of_an_older_store_go_to_default(store_url: str) -> None:
    """A store made before images had projects: after the upgrade its images and aliases
    are default's, and another project with its own images may use the same alias."""
    engine = make_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0011")
            conn.execute(text("INSERT INTO projects (name, description, created_at, config)"
                              " VALUES ('default', '', CURRENT_TIMESTAMP, '{}')"))
            conn.execute(text(
                "INSERT INTO images (fingerprint, kind, os, release, architecture,"
                " description, size, command, created_at, properties) VALUES"
                f" ('{FP}', 'container', '', '', '', '', 0, '[]', CURRENT_TIMESTAMP, '{{}}')"))
            conn.execute(text("INSERT INTO image_aliases (name, image_id)"
                              " SELECT 'old', id FROM images"))
            conn.execute(text(
                "INSERT INTO instances (project_id, name, type, image_id, state, limits,"
                " privileged, command, options, created_at) SELECT p.id, 'web', 'container',"
                " i.id, 'stopped', '{}', false, '[]', '{}', CURRENT_TIMESTAMP"
                " FROM projects p, images i"))
    finally:
        engine.dispose()
    s = Store(store_url)
    try:
        assert s.get_image("old").fingerprint == FP
        assert s.get_instance("default", "web").image == FP       # still points at it
        assert s.image_users(FP) == ["default/web"]
        s.delete_instance("default", "web")
        s.projects.create("own", config={"features.images": "true"})
        with pytest.raises(NotFoundError):
            s.get_image("old", "own")
        s.put_image(Image(fingerprint=FP, aliases=["old"]), "own")   # same alias, own image
        s.delete_image(FP)
        assert s.image_held_elsewhere(FP) and s.get_image("old", "own").fingerprint == FP
    finally:
        s.close()
