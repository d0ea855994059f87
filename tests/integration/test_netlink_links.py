"""Link removal on the real kernel: a link that goes away on its own meanwhile is no error.

A container's veth goes with its network namespace, so between finding the host end and
deleting it the kernel may have removed it already (seen as "delete link ...: No such
device" when a migrated container's NIC was cleaned up).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.net import netlink

pytestmark = [pytest.mark.root]


@pytest.fixture
def netns() -> Iterator[Path]:
    name = f"cu-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)


def test_a_link_gone_between_lookup_and_delete_is_fine(netns: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ns = netns.name
    subprocess.run(["ip", "-n", ns, "link", "add", "cu-a", "type", "veth",
                    "peer", "name", "cu-b"], check=True,
                   timeout=30)
    assert netlink.link_exists("cu-a", netns)
    found = netlink._index

    def lookup_then_vanish(ipr: object, name: str) -> int | None:
        idx = found(ipr, name)
        subprocess.run(["ip", "-n", ns, "link", "del", name], check=True, timeout=30)
        return idx

    monkeypatch.setattr(netlink, "_index", lookup_then_vanish)
    netlink.delete_link("cu-a", netns)   # the old code raised "No such device"
    monkeypatch.undo()
    assert not netlink.link_exists("cu-a", netns)


VXLAN_RACE = """
from cumulo.net import netlink
netlink.create_bridge("cu-bold1")
netlink.create_vxlan("cu-xold1", 4242, "10.9.9.1", 4789, "cu-bold1", 1400)
netlink.create_bridge("cu-bnew1")
try:
    netlink.create_vxlan("cu-xnew1", 4242, "10.9.9.1", 4789, "cu-bnew1", 1400)
except Exception as err:
    print("without stale:", err)
netlink.create_vxlan("cu-xnew1", 4242, "10.9.9.1", 4789, "cu-bnew1", 1400, stale="cu-x")
print(netlink.link_exists("cu-xold1"), netlink.link_exists("cu-xnew1"))
"""


def test_a_deleted_networks_tunnel_with_the_same_vni_gives_way(netns: Path) -> None:
    """A member that has not yet removed a deleted overlay's tunnel, when the lowest free
    VNI goes to a new overlay at once: the kernel takes one VXLAN device per VNI, address
    and port ("File exists"); ours (``stale``) goes and the new one is made (CI saw the
    create fail in tests/system/test_overlay_cli.py)."""
    r = subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", VXLAN_RACE],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "without stale: vxlan cu-xnew1: File exists\nFalse True\n"
