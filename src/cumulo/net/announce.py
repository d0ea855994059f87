"""Gratuitous ARP from inside an instance's netns: "this address is at this MAC, here".

A container wired on a new host (restored by CRIU after a live migration) sends
nothing until its peers talk to it, and a peer-only connection (the instance just
ACKs) can stall where a bridge still sends its MAC elsewhere. QEMU announces a
migrated VM itself (``announce-self``); for a container the daemon does it, as
QEMU does: a few ARP requests for its own address, spaced out, from its own NIC, so
every bridge of the segment (the tunnel ports of the other members too) learns
where the MAC is now.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import struct
import threading
from ipaddress import IPv4Address
from pathlib import Path

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
ETH_P_ARP = 0x0806
ROUNDS = (0.0, 0.2, 1.0, 3.0)   # seconds after wiring (QEMU: 5 rounds, 50 ms up)


def frame(mac: str, ip: IPv4Address) -> bytes:
    """An ARP request for ``ip`` from ``ip`` at ``mac``, to broadcast (RFC 5227's
    announcement)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = ip.packed
    eth = b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + addr + b"\x00" * 6 + addr
    return eth + arp


def _send_rounds(ns_fd: int, ifname: str, data: bytes, rounds: tuple[float, ...]) -> None:
    """In this thread only: join the netns, then send at each round (bounded)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(ns_fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind((ifname, 0))
            waited = 0.0
            for at in rounds:
                if at > waited:
                    threading.Event().wait(at - waited)
                    waited = at
                sock.send(data)
    except OSError as err:   # the instance went meanwhile, or no such link: nothing to do
        log.debug("announce on %s stopped: %s", ifname, err)
    finally:
        os.close(ns_fd)


def announce(netns: Path, ifname: str, mac: str, ip: IPv4Address,
             rounds: tuple[float, ...] = ROUNDS) -> None:
    """Send the announcements from ``ifname`` in ``netns`` in the background (a thread
    of its own joins the netns; the daemon's other threads stay where they are)."""
    try:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        log.debug("no announce for %s: %s", ifname, err)
        return
    with contextlib.suppress(RuntimeError):   # (the interpreter is ending)
        threading.Thread(target=_send_rounds, args=(fd, ifname, frame(mac, ip), rounds),
                         name=f"announce-{ifname}", daemon=True).start()
        return
    os.close(fd)
