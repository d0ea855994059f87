"""QMP, the QEMU Machine Protocol: the only module that imports ``qemu.qmp``.

Each call connects to the VM's unix socket, runs one command and disconnects, so
nothing is held across daemon restarts; ``asyncio.run`` per call keeps it synchronous.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError
from qemu.qmp.protocol import ConnectError
from qemu.qmp.qmp_client import GreetingError, NegotiationError

from cumulo.errors import DriverError

TIMEOUT = 5.0


class QmpTimeout(DriverError):
    """QEMU took the connection but did not answer in time (its main loop is blocked,
    e.g. draining a disk whose NBD link is down): it may answer later."""

NEGOTIATION_RETRIES = 3


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
        for _ in range(NEGOTIATION_RETRIES):
            try:
                return asyncio.run(asyncio.wait_for(_execute(socket, command, args), timeout))
            except ConnectError as err:
                # an event can overtake the greeting or its reply (seen during an
                # incoming migration and a disk mirror to a migration's destination),
                # and reading the greeting failed once with EINVAL (that mirror, on a
                # loaded host); nothing ran yet, so connecting again is safe. No
                # socket, no QEMU: at once.
                if not isinstance(err.exc, GreetingError | NegotiationError | OSError) or \
                        isinstance(err.exc, FileNotFoundError | ConnectionRefusedError):
                    raise
                time.sleep(0.05)
        return asyncio.run(asyncio.wait_for(_execute(socket, command, args), timeout))
    except TimeoutError as err:
        raise QmpTimeout(f"QMP {command} on {socket} failed: QEMU did not answer in"
                         f" {timeout:g}s") from err
    except (QMPError, OSError, EOFError) as err:
        raise DriverError(f"QMP {command} on {socket} failed: {str(err) or type(err).__name__}"
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


# --- block devices: hot-plug and hot-unplug (volumes) ---------------------------------
async def _device_del(socket: Path, dev_id: str) -> None:
    """device_del, then wait for the guest to release it (DEVICE_DELETED with its id)."""
    client = QMPClient("cumulo")
    try:
        await client.connect(str(socket))
        with client.listener("DEVICE_DELETED") as listener:
            await client.execute("device_del", {"id": dev_id})
            while True:
                event: Any = await listener.get()
                if event.get("data", {}).get("device") == dev_id:
                    return
    finally:
        await client.disconnect()


def device_del(socket: Path, dev_id: str, timeout: float = 30.0) -> None:
    """Unplug device ``dev_id``; returns once the guest let it go (ACPI eject on PCI)."""
    try:
        asyncio.run(asyncio.wait_for(_device_del(socket, dev_id), timeout))
    except TimeoutError:
        raise DriverError(f"the guest did not release device {dev_id!r} within {timeout:.0f}s"
                          " (is it still mounted there?)") from None
    except (QMPError, OSError, EOFError) as err:
        raise DriverError(f"QMP device_del {dev_id} on {socket} failed:"
                          f" {err or type(err).__name__}") from err


def blockdev_add(socket: Path, args: dict[str, Any]) -> None:
    execute(socket, "blockdev-add", args)


def blockdev_del(socket: Path, node: str) -> None:
    execute(socket, "blockdev-del", {"node-name": node})


def device_add(socket: Path, args: dict[str, Any]) -> None:
    execute(socket, "device_add", args)


def block_nodes(socket: Path) -> list[str]:
    """Node names of the top block nodes (query-named-block-nodes, flat)."""
    return [str(n["node-name"]) for n in
            execute(socket, "query-named-block-nodes", {"flat": True})]


def blockstats(socket: Path, timeout: float = TIMEOUT) -> dict[str, dict[str, int]]:
    """I/O figures of each drive (query-blockstats ``stats``), by its drive or device id."""
    out = {}
    for entry in execute(socket, "query-blockstats", timeout=timeout):
        # -drive sets "device"; a -blockdev node only has its device's QOM path
        # (/machine/peripheral/ID/virtio-backend, or ID for IDE)
        qdev = str(entry.get("qdev", "")).removeprefix("/machine/peripheral/").split("/")[0]
        out[str(entry.get("device") or qdev)] = {k: int(v) for k, v in entry["stats"].items()
                                                 if isinstance(v, int)}
    return out


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


# --- migration: checkpoint to a file, restore from one, live migration over TCP ---------------
def migrate(socket: Path, uri: str) -> None:
    """Start sending this VM's state to ``uri`` (``tcp:HOST:PORT`` or ``exec:CMD``)."""
    execute(socket, "migrate", {"uri": uri})


def migrate_incoming(socket: Path, uri: str) -> None:
    """Start receiving state on a QEMU started with ``-incoming defer``."""
    execute(socket, "migrate-incoming", {"uri": uri})


def query_migrate(socket: Path) -> dict[str, Any]:
    """The migration's status and its figures (ram transferred, downtime, total time)."""
    res = execute(socket, "query-migrate")
    return dict(res) if isinstance(res, dict) else {}


def migrate_cancel(socket: Path) -> None:
    execute(socket, "migrate_cancel")


def migrate_set_capabilities(socket: Path, caps: dict[str, bool]) -> None:
    execute(socket, "migrate-set-capabilities",
            {"capabilities": [{"capability": k, "state": v} for k, v in caps.items()]})


def migrate_set_parameters(socket: Path, params: dict[str, Any]) -> None:
    execute(socket, "migrate-set-parameters", params)


def memory_size(socket: Path) -> int:
    """The RAM the guest booted with (the balloon's ceiling), in bytes."""
    return int(execute(socket, "query-memory-size-summary")["base-memory"])
