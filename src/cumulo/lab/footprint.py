"""Footprint of an instance measured from the host side with psutil.

The processes of an instance are its main process (the container's PID 1, a VM's QEMU),
all its descendants, and its monitor when the parent is ``conmon``. For them: the sum of
PSS (proportional set size: shared pages split between their users, so instances sharing
an image do not each count it whole), threads, and listening sockets (TCP in LISTEN,
bound UDP), read from each process's own network namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from cumulo.errors import DriverError

MONITORS = ("conmon",)


@dataclass(frozen=True)
class Footprint:
    pss_bytes: int
    threads: int
    processes: int
    listening_ports: int


def instance_processes(pid: int) -> list[psutil.Process]:
    try:
        main = psutil.Process(pid)
        procs = [main, *main.children(recursive=True)]
        parent = main.parent()
    except psutil.Error as err:
        raise DriverError(f"cannot read process {pid}: {err}") from err
    if parent is not None and parent.name() in MONITORS:
        procs.append(parent)
    return procs


def _listening(proc: psutil.Process) -> set[tuple[str, str, int]]:
    found: set[tuple[str, str, int]] = set()
    for c in proc.net_connections(kind="inet"):
        if not c.laddr:
            continue
        udp = c.type == 2  # socket.SOCK_DGRAM
        if c.status == psutil.CONN_LISTEN or (udp and not c.raddr):
            found.add(("udp" if udp else "tcp", c.laddr.ip, c.laddr.port))
    return found


def measure(pid: int) -> Footprint:
    """PSS, threads and listening sockets of the instance whose main process is ``pid``."""
    pss = threads = 0
    ports: set[tuple[str, str, int]] = set()
    procs = instance_processes(pid)
    for p in procs:
        try:
            pss += p.memory_full_info().pss
            threads += p.num_threads()
            ports |= _listening(p)
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied as err:
            raise DriverError(f"reading the PSS of process {p.pid} needs root: {err}") from err
    return Footprint(pss_bytes=pss, threads=threads, processes=len(procs),
                     listening_ports=len(ports))
