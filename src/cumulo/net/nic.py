"""Instance NICs: a veth pair into a container's netns, or a tap for a VM, on the bridge.

The namespace is the instance's own (``/proc/PID/ns/net`` right after the runtime
created it), owned by its user namespace: root inside may use raw sockets and
mount its /sys, and exec can join it. It goes away with PID 1, and the veth
with it; the next start wires a new pair with the same MAC and IP. A container
restored by CRIU gets a new netns holding only lo (CRIU records none of its links
here), and is wired the same way (drivers/container/restore_hook.py). A container's
NIC announces itself once wired (net/announce.py), as QEMU does for a VM it moved.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cumulo.net import announce, netlink, shaping
from cumulo.net.base import NicPlan

log = logging.getLogger(__name__)


def attach(netns: Path, nics: list[NicPlan]) -> None:
    try:
        netlink.link_up("lo", netns)   # down in the empty netns of a CRIU restore
        for nic in nics:
            netlink.delete_link(nic.host_name)  # a stale end whose netns is still dying
            netlink.create_veth_into(nic.host_name, nic.bridge, netns, nic.inside_name, nic.mac)
            if nic.mtu is not None:   # an overlay's: both ends
                netlink.set_mtu(nic.host_name, nic.mtu)
                netlink.set_mtu(nic.inside_name, nic.mtu, netns)
            netlink.configure_nic(netns, nic.inside_name, nic.address, nic.gateway)
            _moved_here(nic)
    except BaseException:
        detach([n.host_name for n in nics])
        raise
    for nic in nics:   # every bridge of the segment learns where the MAC is now
        announce.announce(netns, nic.inside_name, nic.mac, nic.address.ip)


def attach_taps(nics: list[NicPlan]) -> None:
    """A VM's NICs: one tap per NIC on its bridge, named like a veth's host end.

    The guest configures itself by DHCP from the network's dnsmasq, which hands
    out the address the store gave the NIC's MAC.
    """
    try:
        for nic in nics:
            netlink.create_tap(nic.host_name, nic.bridge)
            if nic.mtu is not None:   # the guest learns it by DHCP
                netlink.set_mtu(nic.host_name, nic.mtu)
            _moved_here(nic)
    except BaseException:
        detach([n.host_name for n in nics])
        raise


def _moved_here(nic: NicPlan) -> None:
    """The bridge forgets where else it saw the NIC's MAC. After a live migration over an
    overlay the destination's bridge has it learned on the tunnel port (the source's
    frames were flooded to every member) and drops frames for it that come in there;
    a restored container need not send first, so a connection where only the peer
    talks would stall."""
    gone = netlink.forget_mac(nic.bridge, nic.mac, nic.host_name)
    if gone:
        log.info("%s: forgot MAC %s on %s", nic.bridge, nic.mac, ", ".join(gone))


def detach(host_names: list[str]) -> None:
    for name in host_names:
        netlink.delete_link(name)
        shaping.unshape(name)
