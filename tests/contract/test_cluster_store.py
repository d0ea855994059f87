"""The cluster's part of the store on both engines: members and their heartbeats, join
tokens that work once and expire, instance locations, the compare-and-set that lets one
member take a lost member's instance, operations tagged with their member."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from cumulo.domain.limits import Limits
from cumulo.domain.models import Image, Instance, Operation
from cumulo.errors import ConflictError, InvalidInputError
from cumulo.store.cluster import EVACUATED, ONLINE, ClusterStore, Member
from cumulo.store.repo import Store

FP = "d" * 64


@pytest.fixture
def stores(store_url: str) -> Iterator[tuple[Store, ClusterStore]]:
    s = Store(store_url)
    s.put_image(Image(fingerprint=FP, aliases=["img"]))
    yield s, ClusterStore(s.db)
    s.close()


def member(name: str) -> Member:
    return Member(name=name, address=f"{name}:8443", state=ONLINE, cpus=4, memory=8 << 30,
                  disk=100 << 30, features={"criu": True})


def test_members_heartbeats_and_state(stores: tuple[Store, ClusterStore]) -> None:
    _, c = stores
    c.add_member(member("a"))
    c.add_member(member("b"))
    with pytest.raises(ConflictError, match="member 'a' already exists"):
        c.add_member(member("a"))
    a = c.get_member("a")
    assert (a.address, a.cpus, a.features) == ("a:8443", 4, {"criu": True})
    assert a.effective(offline_after=60) == ONLINE and a.silent < 60
    assert a.effective(offline_after=-1) == "offline"   # silent longer than allowed
    c.set_state("b", EVACUATED)
    assert c.get_member("b").effective(offline_after=60) == EVACUATED
    c.heartbeat("a", "a:9000", {"criu": False})
    assert c.get_member("a").address == "a:9000"


def test_join_token_once_and_expiring(stores: tuple[Store, ClusterStore]) -> None:
    _, c = stores
    c.add_join_token("n1", "secret-1", ttl=600)
    with pytest.raises(InvalidInputError, match="not known"):
        c.use_join_token("n2", "secret-1")   # made for another name
    c.use_join_token("n1", "secret-1")
    with pytest.raises(InvalidInputError, match="already used"):
        c.use_join_token("n1", "secret-1")
    c.add_join_token("n3", "secret-3", ttl=0.01)
    time.sleep(0.05)   # (the token's lifetime)
    with pytest.raises(InvalidInputError, match="expired"):
        c.use_join_token("n3", "secret-3")
    c.add_member(member("m"))
    with pytest.raises(ConflictError, match="already exists"):
        c.add_join_token("m", "x", ttl=60)


def test_locations_usage_and_claim(stores: tuple[Store, ClusterStore]) -> None:
    s, c = stores
    s.add_instance(Instance(project="default", name="old", type="container", image=FP))
    s.add_instance(Instance(project="default", name="w1", type="container", image=FP,
                            location="a", ephemeral=True,
                            limits=Limits.from_dict({"memory": 1 << 30})))
    s.add_instance(Instance(project="default", name="w2", type="container", image=FP,
                            location="b"))
    assert c.location("default", "w1") == "a" and c.location("default", "nope") is None
    assert c.claim_unplaced("a") == 1 and c.location("default", "old") == "a"
    u = c.usage()
    assert (u["a"].instances, u["a"].memory, u["b"].instances) == (2, 1 << 30, 1)
    assert c.ephemeral_on("a") == [("default", "w1")]
    assert c.claim("default", "w1", "a", "b")
    assert not c.claim("default", "w1", "a", "c")   # someone took it already
    assert s.get_instance("default", "w1").location == "b"
    assert [n for _, n, _ in c.instances_on("b")] == ["w1", "w2"]
    s.update_instance("default", "w2", origin="b", location="a")
    assert c.instances_on("b", origin=True) == [("default", "w2", "a")]


def test_unfinished_operations_of_one_member(stores: tuple[Store, ClusterStore]) -> None:
    s, c = stores
    s.add_operation(Operation(id="op-a", description="x", resources={"member": "a"}))
    s.add_operation(Operation(id="op-b", description="y", resources={"member": "b"}))
    assert c.operation_member("op-a") == "a"
    assert s.fail_unfinished_operations("stopped", member="a") == 1
    assert c.operation_member("op-a") is None             # finished: read it anywhere
    assert s.get_operation("op-b").status.value == "pending"   # b's goes on
