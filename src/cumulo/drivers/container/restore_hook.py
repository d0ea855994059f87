"""Wiring a restored container's NICs while CRIU restores it, before its sockets.

CRIU gives the restored PID 1 a new network namespace holding only ``lo``; a TCP
connection that was open at the dump can only be put back if the container's address
is there when CRIU restores the socket. runc runs the OCI ``createRuntime`` hooks at
CRIU's ``setup-namespaces`` notification (the namespaces exist, no task runs yet), with
the container's state, whose ``pid`` is then the restored PID 1, on the hook's stdin.

So for a restore the bundle's ``config.json`` gets one such hook: a shell line that
writes that state to ``plug.json`` in the instance dir and waits (bounded) for the
driver's answer, ``plugged`` or ``plug-failed``. ``Plugger`` is the driver's side: a
thread that waits for ``plug.json``, calls the service's ``on_created(pid)`` (the same
wiring as at a start) and answers. The hook is removed again after the restore.

CRIU locks the network of a netns it dumps, not of this new one: a peer's segment that
came in over a freshly wired NIC before CRIU had put the socket back would be answered
with a reset, and the connection lost. So the netns drops all input but ``lo`` from
before the wiring until the driver calls ``unlock`` once the restore is done; the
peers' retransmissions then reach the restored sockets.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cumulo.errors import UnsupportedError
from cumulo.net import nft

STATE = "plug.json"
DONE = "plugged"
FAILED = "plug-failed"
WAIT_S = 60          # how long the hook waits for the driver's answer
POLL = 0.02


def _files(instance_dir: Path) -> tuple[Path, Path, Path]:
    return instance_dir / STATE, instance_dir / DONE, instance_dir / FAILED


def hook(instance_dir: Path) -> dict[str, Any]:
    """The ``createRuntime`` hook: hand over the state, wait for the answer."""
    state, done, failed = (str(p) for p in _files(instance_dir))
    script = (f'cat > "{state}.tmp" && mv "{state}.tmp" "{state}" || exit 1; i=0;'
              f' while [ $i -lt {int(WAIT_S / 0.1)} ]; do [ -e "{done}" ] && exit 0;'
              f' [ -e "{failed}" ] && exit 1; sleep 0.1; i=$((i+1)); done; exit 1')
    return {"path": "/bin/sh", "args": ["sh", "-c", script]}


def drop(data: dict[str, Any]) -> bool:
    """Remove the hook from a loaded ``config.json``; True if it was there (a restore
    that never finished: a start would wait for an answer that does not come)."""
    hooks = data.get("hooks") or {}
    if "createRuntime" not in hooks:
        return False
    del hooks["createRuntime"]
    if not hooks:
        data.pop("hooks", None)
    return True


def set_hook(config: Path, instance_dir: Path | None) -> None:
    """Add the hook to ``config`` (``instance_dir`` given) or remove it (None)."""
    data = json.loads(config.read_text())
    if instance_dir is None:
        drop(data)
    else:
        data.setdefault("hooks", {})["createRuntime"] = [hook(instance_dir)]
    tmp = config.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, config)


def clear(instance_dir: Path) -> None:
    for f in _files(instance_dir):
        f.unlink(missing_ok=True)
    _files(instance_dir)[0].with_suffix(".json.tmp").unlink(missing_ok=True)


class Plugger:
    """Waits for the hook's ``plug.json`` and wires the NICs into that pid's netns."""

    def __init__(self, instance_dir: Path, wire: Callable[[int], None],
                 lock: bool = True) -> None:
        self.instance_dir, self.wire, self.lock = instance_dir, wire, lock
        self.wired = False
        self.pid: int | None = None    # the netns whose input is locked
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cumulo-restore-plug",
                                        daemon=True)

    def __enter__(self) -> Plugger:
        clear(self.instance_dir)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        clear(self.instance_dir)

    def unlock(self) -> None:
        """Let packets into the restored netns again (a no-op if it was not locked)."""
        if self.pid is not None:
            nft.unlock_input(Path(f"/proc/{self.pid}/ns/net"))
            self.pid = None

    def _run(self) -> None:
        state, done, failed = _files(self.instance_dir)
        deadline = time.monotonic() + 10 * WAIT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            if state.exists():
                break
            time.sleep(POLL)
        else:
            return
        try:
            pid = int(json.loads(state.read_text())["pid"])
            if self.lock:
                with contextlib.suppress(UnsupportedError):   # no nft: no NIC to lock
                    nft.lock_input(Path(f"/proc/{pid}/ns/net"))
                    self.pid = pid
            self.wire(pid)
            self.wired = True
            done.touch()
        except BaseException as err:   # the hook fails, so runc restore fails: say why
            self.error = err
            with contextlib.suppress(OSError):
                failed.touch()
