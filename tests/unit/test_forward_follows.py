"""Forwards in a cluster: one of a member's cluster address follows its instance
(answers on that member's address, DNATed there only); others stay as they are."""

from __future__ import annotations

import threading
from typing import Any

from cumulo.services.firewall import FirewallService, follows, placed
from cumulo.store.firewall import Forward

WHERE = {"m1": "10.0.0.1", "m2": "10.0.0.2"}


def fwd(listen: str, location: str | None, port: int = 80) -> Forward:
    return Forward(project="default", network="n", listen_address=listen, listen_port=port,
                   protocol="tcp", instance="web", target_port=80, target_ip="10.9.0.2",
                   location=location)


def test_a_forward_of_a_cluster_address_answers_where_its_instance_runs() -> None:
    f = fwd("10.0.0.1", "m2")
    assert follows(f, WHERE)
    assert placed(f, WHERE).listen_address == "10.0.0.2"
    other = fwd("192.0.2.7", "m2")
    assert not follows(other, WHERE) and placed(other, WHERE) == other


class _Store:
    def __init__(self, forwards: list[Forward]) -> None:
        self.forwards = forwards

    def list_forwards(self, *_: Any) -> list[Forward]:
        return self.forwards


def here(me: str | None, forwards: list[Forward]) -> list[str]:
    svc = FirewallService.__new__(FirewallService)
    svc.fw, svc.lock = _Store(forwards), threading.RLock()  # type: ignore[assignment]
    svc.members = lambda: (me, WHERE if me else {})
    return [f"{f.listen_address}:{f.listen_port}" for f in svc._forwards_here()]


def test_only_the_instances_member_dnats_a_following_forward() -> None:
    found = [fwd("10.0.0.1", "m2", 80), fwd("192.0.2.7", "m1", 81)]
    assert here("m2", found) == ["10.0.0.2:80", "192.0.2.7:81"]
    assert here("m1", found) == ["192.0.2.7:81"]
    assert here(None, found) == ["10.0.0.1:80", "192.0.2.7:81"]   # no cluster: as stored
