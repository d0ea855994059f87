"""host.keys: reading /proc/key-users and naming the quota a container hit."""

from __future__ import annotations

from pathlib import Path

from cumulo.host import keys

KEY_USERS = """    0:     9 8/8 3/1000000 48/25000000
1000000:   200 200/200 200/200 1885/20000
"""


def test_usage_and_message(tmp_path: Path) -> None:
    f = tmp_path / "key-users"
    f.write_text(KEY_USERS)
    assert keys.usage(1000000, f) == keys.KeyUsage(200, 200, 1885, 20000)
    assert keys.usage(42, f) is None
    msg = keys.quota_message(1000000, f)
    assert "uid 1000000" in msg and "(200/200 keys, 1885/20000 bytes)" in msg
    assert "sysctl -w kernel.keys.maxkeys=2000 kernel.keys.maxbytes=200000" in msg
    assert "kernel.keys.root_maxkeys=" in keys.quota_message(0, f)


def test_is_quota_error() -> None:
    assert keys.is_quota_error("unable to start container process: error during container"
                               " init: unable to join session keyring: unable to create"
                               " session key: disk quota exceeded")
    assert not keys.is_quota_error("write /sys/fs/cgroup/x: disk quota exceeded")
