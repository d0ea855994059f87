"""Shared test set-up: markers that skip with a stated reason when the host lacks something,
the order of modules for parallel runs (pytest-xdist), the run's own temp tree, and the
check that the run left nothing in the host's network namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import costs, pg

# Seconds a module took on the 2-core CI host (TCG), to start the longest
# modules first when workers share them out: longest first ends the run soonest. Only an
# order: a stale figure costs a little time, nothing else. Figures: each module's seconds in
# the junit report of a CI run (2026-12-06, 3 workers); smaller ones by their marks.
_MODULE_SECONDS = {
    # (the Debian VM disk built once and cached; ~300 s more the first time, in the
    # first of them to start)
    "system/test_vm_debian_guest.py": 309, "system/test_bench_cli.py": 134,
    "system/test_cluster_cli.py": 116, "system/test_migration_faults.py": 114,
    "system/test_overlay_cli.py": 110, "system/test_fault_points.py": 86,
    "system/test_image_build.py": 84, "integration/test_firewall.py": 61,
    "system/test_readme.py": 60, "system/test_docker_cli.py": 52,
    "system/test_appvm_kernel.py": 51, "system/test_migration_cli.py": 47,
    "integration/test_vm_driver.py": 47, "system/test_system_container.py": 39,
    "integration/test_vm_root_disk.py": 38, "system/test_vm_console.py": 37,
    "system/test_container_migration_cli.py": 37, "integration/test_vm_network.py": 36,
    "system/test_soak.py": 32, "system/test_web_console.py": 32, "unit/test_api_fuzz.py": 30,
    "system/test_network_attach_cli.py": 27, "system/test_observability_cli.py": 25,
    "integration/test_bandwidth.py": 24, "integration/test_vm_agent.py": 23,
    "system/test_cli.py": 22, "system/test_concurrency.py": 21,
    "integration/test_vm_migration.py": 21, "system/test_system_container_cloud_init.py": 20,
    "system/test_vm_migration_memory.py": 19, "system/test_snapshot_stateful_cli.py": 18,
    "integration/test_networks.py": 17, "system/test_exec_interrupt.py": 17,
    "system/test_docker_vm_exec.py": 16, "system/test_vm_checkpoint_cli.py": 16,
    "system/test_vm_exec_tty.py": 16, "system/test_vm_storage_cli.py": 16,
    "system/test_full_disks.py": 15, "system/test_api_fuzz_daemon.py": 14,
    "unit/test_web_console_api.py": 14, "unit/test_api.py": 13,
    "system/test_bench_cleanup.py": 12, "unit/test_store.py": 12,
    "system/test_tls_identities.py": 12, "integration/test_vm_microvm.py": 12,
    "integration/test_vm_cgroup.py": 11, "system/test_image_io.py": 11,
    "system/test_appvm_cli.py": 10, "system/test_clone_footprint.py": 10,
}
# Otherwise a rough cost of one test by its marks.
_WEIGHTS = (("qemu", 15.0), ("slow", 10.0), ("system", 3.0), ("runtime", 2.0), ("root", 1.0))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    have_runtime = bool(shutil.which("runc") or shutil.which("crun")) and bool(
        shutil.which("conmon"))
    qemu_reason = qemu_skip_reason()
    pg_reason = pg.skip_reason()
    for item in items:
        if "qemu" in item.keywords and qemu_reason:
            item.add_marker(pytest.mark.skip(reason=qemu_reason))
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (namespaces, cgroups)"))
        if "runtime" in item.keywords and not have_runtime:
            item.add_marker(pytest.mark.skip(reason="needs runc or crun, and conmon"))
        if "postgres" in item.keywords and pg_reason:
            item.add_marker(pytest.mark.skip(reason=pg_reason))
    items[:] = longest_modules_first(items)


def _weight(item: pytest.Item) -> float:
    for mark, seconds in _WEIGHTS:
        if mark in item.keywords:
            return seconds
    return 0.1


def _module_seconds(module: str, items: list[pytest.Item]) -> float:
    known = _MODULE_SECONDS.get(module.removeprefix("tests/"))
    return float(known) if known is not None else sum(map(_weight, items))


def longest_modules_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """Whole modules (their own order kept), the costliest first."""
    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    ordered = sorted(by_module.items(), key=lambda kv: -_module_seconds(*kv))
    return [item for _module, group in ordered for item in group]


def qemu_skip_reason() -> str | None:
    """Why real QEMU guests cannot boot here, or None."""
    if shutil.which("qemu-system-x86_64") is None:
        return "needs qemu-system-x86_64 (scripts/install.sh installs qemu-system-x86)"
    if not any(Path("/var/cache/cumulo/kernel").glob("*/vmlinuz")):
        return "needs the guest kernel in /var/cache/cumulo/kernel (run scripts/install.sh)"
    if shutil.which("busybox") is None:
        return "needs busybox (busybox-static) for the guest initramfs"
    return None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.PgServer]:
    """A throwaway PostgreSQL server for this pytest process (each xdist worker has one)."""
    if reason := pg.skip_reason():
        pytest.skip(reason)
    server = pg.PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: pg.PgServer) -> Iterator[str]:
    """The URL of a new empty database on the throwaway server, dropped afterwards."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store database on each engine: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def _host_network_objects() -> set[str]:
    """Our links and nftables tables in the host's own network namespace."""
    found = {f"link {p.name}" for p in Path("/sys/class/net").iterdir()
             if p.name.startswith("cu-")}
    if shutil.which("nft") and os.geteuid() == 0:
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                             timeout=30).stdout
        found |= {f"table {line.split()[-1]}" for line in out.splitlines()
                  if line.split()[-1:] and line.split()[-1].startswith("cumulo_")}
    return found


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# The tests' temp dirs: a short tree of the run's own, /tmp/cuXXXXXXXX (workers add
# popen-gwN/): a QEMU socket path must stay under 108 bytes, and any other pytest session
# on the host resets /tmp/pytest-of-root to 0700, which containers in a user namespace
# then cannot traverse. Removed after a run that passed; kept (and named) otherwise.
_TOP = pytest.StashKey[Path]()
_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None and not _is_xdist_worker(config):
        top = Path(tempfile.mkdtemp(prefix="cu", dir="/tmp"))
        config.stash[_TOP] = top
        config.option.basetemp = str(top)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    config = terminalreporter.config
    _print_module_times(terminalreporter)
    if _TOP in config.stash and exitstatus != 0:
        terminalreporter.write_line(f"(the tests' temp dirs are kept in {config.stash[_TOP]})")


def pytest_unconfigure(config: pytest.Config) -> None:
    top = config.stash.get(_TOP, None)
    if top is None or not config.stash.get(_PASSED, False):
        return
    with open("/proc/self/mountinfo") as f:   # never delete through a mount left behind
        if any(line.split()[4].startswith(str(top)) for line in f):
            return
    shutil.rmtree(top, ignore_errors=True)


# No test may leave (or make) bridges, veths or tables in the host's namespace. Checked
# once around the whole run, in the process that runs or distributes the tests: parallel
# workers see each other's tests' objects while those run, so a check per worker could not
# tell whose they are.
_BEFORE = pytest.StashKey[set[str]]()


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _is_xdist_worker(session.config):
        session.config.stash[_BEFORE] = _host_network_objects()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    config.stash[_PASSED] = exitstatus == 0
    if _is_xdist_worker(config) or _BEFORE not in config.stash:
        return
    left = _host_network_objects() - config.stash[_BEFORE]
    if left:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        message = f"tests left these in the host's network namespace: {sorted(left)}"
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("=", message, red=True)
        else:
            print(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        config.stash[_PASSED] = False


# The time of each module (setup, call and teardown of its tests, summed over workers),
# printed at the end beside --durations: keeps _MODULE_SECONDS easy to bring up to date.
_SPENT: dict[str, float] = {}


_WORKERS: dict[str, float] = {}


_KINDS: dict[str, list[float]] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    report = yield
    # the steps' costs ride on the report to the process that prints the summary
    report.user_properties.append(("costs", costs.take()))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, value in report.user_properties:
        if name == "costs":
            for kind, (n, seconds) in value.items():
                entry = _KINDS.setdefault(kind, [0, 0.0])
                entry[0] += n
                entry[1] += seconds
    module = report.nodeid.split("::", 1)[0]
    _SPENT[module] = _SPENT.get(module, 0.0) + report.duration
    node = getattr(report, "node", None)   # the xdist worker that ran it
    worker = str(getattr(getattr(node, "gateway", None), "id", "main"))
    _WORKERS[worker] = _WORKERS.get(worker, 0.0) + report.duration


def _print_module_times(terminalreporter: pytest.TerminalReporter) -> None:
    if terminalreporter.config.getoption("durations") is None or not _SPENT:
        return
    terminalreporter.write_sep("=", "slowest 15 modules (seconds, all their tests)")
    for module, seconds in sorted(_SPENT.items(), key=lambda kv: -kv[1])[:15]:
        terminalreporter.write_line(f"{seconds:8.1f}  {module}")
    # the busiest worker bounds the run: a spread here means the order hints are stale
    terminalreporter.write_line("busy seconds per worker: " + ", ".join(
        f"{w} {s:.0f}" for w, s in sorted(_WORKERS.items())) + f" (all {sum(_SPENT.values()):.0f})")
    if _KINDS:   # the steps every module repeats (tests/costs.py)
        terminalreporter.write_line("of which: " + ", ".join(
            f"{kind} {int(n)}x {s:.0f} s" for kind, (n, s) in sorted(
                _KINDS.items(), key=lambda kv: -kv[1][1])))
