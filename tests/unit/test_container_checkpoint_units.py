"""The pure parts of container checkpoint/migration: errors users see, command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from cumulo.drivers.container import checkpoint, monitor
from cumulo.drivers.container.runtime import OciRuntime, criu_error
from cumulo.errors import DriverError, InvalidInputError, UnsupportedError
from cumulo.host.info import HostInfo
from cumulo.services.archive_migration import cannot_live, part_path


def test_no_criu_or_a_failing_one_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "criu_binary", lambda: None)
    with pytest.raises(UnsupportedError, match="criu is not installed.*install.sh"):
        checkpoint.require_criu(HostInfo())
    monkeypatch.setattr(checkpoint, "criu_binary", lambda: "/usr/sbin/criu")
    with pytest.raises(UnsupportedError, match=r"criu 3\.17 fails `criu check`.*4\.x"):
        checkpoint.require_criu(HostInfo(criu="3.17", criu_check=False))
    with pytest.raises(UnsupportedError, match=r"cannot lock the network.*iptables"):
        checkpoint.require_criu(HostInfo(criu="4.2.1", criu_check=True))
    assert checkpoint.require_criu(HostInfo(criu="4.2.1", criu_check=True,
                                            criu_network_lock="nftables")) == "/usr/sbin/criu"


def test_criu_options_file_sets_the_network_lock(tmp_path: Path) -> None:
    conf = tmp_path / "container" / "criu.conf"
    checkpoint.write_criu_conf(conf, HostInfo(criu_network_lock="nftables"))
    assert conf.read_text().splitlines()[-1] == "network-lock nftables"
    checkpoint.write_criu_conf(conf, HostInfo(criu_network_lock="iptables"))
    assert conf.read_text().splitlines()[-1] == "network-lock iptables"


def test_criu_error_names_the_cause_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "dump.log"
    log.write_text(
        "(00.08) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self\n"
        "(00.21) Error (criu/files-reg.c:1790): Can't lookup mount=27 for fd=1 path=/x\n"
        "(00.31) Error (criu/cr-dump.c:2111): Dumping FAILED.\n")
    msg = criu_error('level=error msg="criu failed: type NOTIFY errno 0"', log)
    assert msg.startswith("criu: Can't lookup mount=27 for fd=1 path=/x (log: ")
    assert criu_error('time="x" level=error msg="container still running"\n',
                      tmp_path / "absent.log") == "container still running"


def test_live_refusal_offers_the_cold_move() -> None:
    err = cannot_live("web", DriverError("criu: something"))
    assert "--stop-first" in str(err) and "processes restart" in str(err)
    assert isinstance(err, UnsupportedError)


def test_state_parts_are_a_fixed_set(tmp_path: Path) -> None:
    assert part_path(tmp_path, "final") == tmp_path / "incoming-final.tar"
    with pytest.raises(InvalidInputError, match="unknown state part"):
        part_path(tmp_path, "../../etc/passwd")


def test_conmon_restores_through_the_runtime(tmp_path: Path) -> None:
    try:
        runtime = OciRuntime("runc", tmp_path)
        monitor.conmon_binary()
    except UnsupportedError as err:
        pytest.skip(str(err))
    paths = monitor.ConmonPaths(tmp_path / "run", tmp_path / "persist", tmp_path / "log")
    argv = monitor.command_line(runtime, "c1", tmp_path, paths, restore=tmp_path / "images",
                                runtime_args=tuple(runtime.criu_args("/opt/criu")))
    assert argv[argv.index("--restore") + 1] == str(tmp_path / "images")
    at = argv.index("--criu=/opt/criu")
    assert argv[at - 1] == "--runtime-arg"
    assert "--tcp-established" in argv and "--file-locks" in argv
    assert "--restore" not in monitor.command_line(runtime, "c1", tmp_path, paths)
