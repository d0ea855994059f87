"""Images follow cluster launches (cluster/image_pull.py): nothing to do off a cluster
or when the files are here; refused in one line when no other member that answers can
have them (the fetch itself is the cluster's system test)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cumulo.cluster import image_pull
from cumulo.domain.models import Image
from cumulo.errors import ConflictError

FP = "e" * 64


def fakes(me: str | None, here: bool, states: dict[str, str]) -> tuple[Any, Any]:
    members = [SimpleNamespace(name=n) for n in states]
    cluster = SimpleNamespace(
        member=me, store=SimpleNamespace(list_members=lambda: members),
        state_of=lambda m: states[m.name],
        remote_for=lambda name: pytest.fail(f"asked {name}, which cannot have it"))
    images = SimpleNamespace(
        files=SimpleNamespace(exists=lambda fp: here and fp == FP),
        store=SimpleNamespace(get_image=lambda fp: Image(fingerprint=fp, aliases=["web"])))
    return cluster, images


def test_nothing_to_fetch_off_a_cluster_or_when_here() -> None:
    for me, here in ((None, False), ("m2", True)):
        cluster, images = fakes(me, here, {"m1": "online", "m2": "online"})
        assert image_pull.pull(cluster, images, FP, lambda f, m: None) is None


def test_no_other_member_answering_is_one_line() -> None:
    cluster, images = fakes("m2", False, {"m1": "offline", "m2": "online"})
    with pytest.raises(ConflictError, match=r"^image web is on no other online member:"
                                            r" import it on m2 \(`cumulo image import`\)$"):
        image_pull.pull(cluster, images, FP, lambda f, m: None)
