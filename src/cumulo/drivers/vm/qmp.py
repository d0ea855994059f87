"""QMP, the QEMU Machine Protocol: the only module that imports ``qemu.qmp``.

Each call connects to the VM's unix socket, runs one command and disconnects, so
nothing is held across daemon restarts; ``asyncio.run`` per call keeps it synchronous.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError

from cumulo.errors import DriverError

TIMEOUT = 5.0


async def _execute(socket: Path, command: str, args: dict[str, Any] | None) -> Any:
    client = QMPClient("cumulo")
    try:
        await client.connect(str(socket))
        return await client.execute(command, args)
    finally:
        await client.disconnect()


def execute(socket: Path, command: str, args: dict[str, Any] | None = None,
            timeout: float = TIMEOUT) -> Any:
    """Run one QMP command; every failure (no socket, QEMU gone, error reply) is a DriverError."""
    try:
        return asyncio.run(asyncio.wait_for(_execute(socket, command, args), timeout))
    except (QMPError, OSError, EOFError, TimeoutError) as err:
        raise DriverError(f"QMP {command} on {socket} failed: {err or type(err).__name__}"
                          ) from err


def reachable(socket: Path) -> bool:
    try:
        execute(socket, "query-status", timeout=2.0)
    except DriverError:
        return False
    return True


def query_status(socket: Path) -> str:
    """QEMU's run state: "running", "paused", "shutdown", ..."""
    return str(execute(socket, "query-status")["status"])


def stop(socket: Path) -> None:
    execute(socket, "stop")


def cont(socket: Path) -> None:
    execute(socket, "cont")


def system_powerdown(socket: Path) -> None:
    execute(socket, "system_powerdown")


def quit(socket: Path) -> None:
    """Ask QEMU to exit; the reply may race with the socket closing, which is fine."""
    try:
        execute(socket, "quit")
    except DriverError as err:
        if not isinstance(err.__cause__, (EOFError, ConnectionError)):
            raise


def query_kvm(socket: Path) -> tuple[bool, bool]:
    """(present, enabled) of KVM in this QEMU."""
    res = execute(socket, "query-kvm")
    return bool(res["present"]), bool(res["enabled"])


def balloon(socket: Path, target_bytes: int) -> None:
    execute(socket, "balloon", {"value": target_bytes})


def query_balloon(socket: Path) -> int:
    return int(execute(socket, "query-balloon")["actual"])


def memory_size(socket: Path) -> int:
    """The RAM the guest booted with (the balloon's ceiling), in bytes."""
    return int(execute(socket, "query-memory-size-summary")["base-memory"])
