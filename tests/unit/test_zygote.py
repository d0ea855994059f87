"""The system tests' zygote (tests/zygote.py): a call reaches a zygote that listens, and
one that stopped listening is replaced instead of failing every later call."""

from __future__ import annotations

import os
import socket

import pytest

from tests import zygote

pytestmark = pytest.mark.skipif(not zygote.forking(), reason="CUMULO_TEST_FORK=0: no zygote")
ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}


def test_a_zygote_that_refuses_connections_is_replaced() -> None:
    assert zygote.run(["--help"], ENV, timeout=120).returncode == 0
    path = zygote._socket("cli")
    os.unlink(path)
    refusing = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    refusing.bind(path)   # its name, and nobody listening: a connect is refused
    try:
        r = zygote.run(["--help"], ENV, timeout=120)
    finally:
        refusing.close()
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout
    assert zygote._socket("cli") != path
