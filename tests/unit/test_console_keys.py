"""`cumulo console` key handling: ctrl-a q detaches, ctrl-a a is a literal ctrl-a."""

from __future__ import annotations

from cumulo.cli.console_client import Keys


def test_plain_keys_pass_through_and_ctrl_a_q_detaches() -> None:
    k = Keys()
    assert k.feed(b"ls\r") == (b"ls\r", False)
    assert k.feed(b"echo x\x01q after") == (b"echo x", True)


def test_escape_split_across_reads_and_literal_ctrl_a() -> None:
    k = Keys()
    assert k.feed(b"a\x01") == (b"a", False)
    assert k.feed(b"q") == (b"", True)
    k = Keys()
    assert k.feed(b"\x01a\x01x") == (b"\x01\x01x", False)
