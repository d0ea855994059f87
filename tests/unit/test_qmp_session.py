"""One QMP call's session: an event QEMU sends before its greeting (a disk mirror
ending while the daemon connects) fails that session only; the call connects again
and runs. A fake QMP server on a unix socket plays QEMU."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cumulo.drivers.vm import qmp
from cumulo.errors import DriverError

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0},
                                "package": ""}, "capabilities": []}}
EVENT = {"event": "BLOCK_JOB_READY", "data": {"device": "mirror0"},
         "timestamp": {"seconds": 1, "microseconds": 0}}


def messages(conn: socket.socket) -> Iterator[dict[str, Any]]:
    """The client's JSON objects as they come (qemu.qmp ends them with no newline)."""
    buf, decoder = "", json.JSONDecoder()
    while chunk := conn.recv(4096):
        buf += chunk.decode()
        while buf.strip():
            try:
                msg, end = decoder.raw_decode(buf.lstrip())
            except ValueError:
                break
            buf = buf.lstrip()[end:]
            yield msg


def serve(server: socket.socket, sessions: list[str]) -> None:
    """First session: an event where the greeting should be; then a well-behaved QEMU."""
    for first in (EVENT, GREETING):
        conn, _ = server.accept()
        with conn:
            conn.sendall(json.dumps(first).encode() + b"\r\n")
            for msg in messages(conn):
                sessions.append(f"{'event' if first is EVENT else 'greeting'}:"
                                f" {msg['execute']}")
                reply = {"status": "running", "running": True} \
                    if msg["execute"] == "query-status" else {}
                with contextlib.suppress(BrokenPipeError):   # the client left
                    answer = {"return": reply, **({"id": msg["id"]} if "id" in msg else {})}
                    conn.sendall(json.dumps(answer).encode() + b"\r\n")


def test_an_event_before_the_greeting_costs_one_session_not_the_call(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(2)
    server.settimeout(20)
    sessions: list[str] = []
    t = threading.Thread(target=serve, args=(server, sessions), daemon=True)
    t.start()
    try:
        assert qmp.query_status(path) == "running"
    finally:
        t.join(20)
        server.close()
    assert sessions[-2:] == ["greeting: qmp_capabilities", "greeting: query-status"]
    assert "event: query-status" not in sessions   # nothing ran in the failed session


def test_a_qemu_that_does_not_answer_is_named_as_such(tmp_path: Path) -> None:
    """QEMU blocked (a disk mirror waiting on a cut link) accepts but never greets: the
    error says so, never an empty reason."""
    path = tmp_path / "qmp.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(8)
        with pytest.raises(DriverError, match=r"query-status .* did not answer in 0.3s"):
            qmp.execute(path, "query-status", timeout=0.3)
