"""Every program Cumulo runs is installed by scripts/install.sh or comes with Debian, and
a missing one is one line naming the package to install."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cumulo.errors import UnsupportedError
from cumulo.host.tools import BASE, PACKAGE_OF, not_installed
from cumulo.images.importer import _run as importer_run
from cumulo.storage.tools import run as storage_run

ROOT = Path(__file__).resolve().parents[2]
# a literal program name handed to a runner: run(["qemu-img", ...]), shutil.which("nft")...
RUNS = re.compile(r'(?<!self\.)(?:subprocess\.(?:run|Popen)|\brun|\b_run|shutil\.which)'
                  r'\(\s*\[?"([a-z0-9][\w.+-]*)"')
ELSEWHERE = {"criu": "scripts/install-criu.sh"}


def _install_packages() -> set[str]:
    text = (ROOT / "scripts" / "install.sh").read_text()
    body = re.search(r"^PACKAGES=\((.*?)^\)", text, re.S | re.M)
    assert body is not None
    return {w for line in body.group(1).splitlines()
            for w in line.split("#", 1)[0].split()}


def test_every_package_is_installed_or_base() -> None:
    packages = _install_packages()
    assert "kmod" in packages and "nftables" in packages
    lacking = {prog: pkg for prog, pkg in PACKAGE_OF.items()
               if pkg not in packages and pkg not in BASE}
    assert not lacking, f"add to scripts/install.sh PACKAGES: {lacking}"


def test_the_code_runs_only_programs_the_table_names() -> None:
    found: dict[str, str] = {}
    for path in (ROOT / "src" / "cumulo").rglob("*.py"):
        for prog in RUNS.findall(path.read_text()):
            found.setdefault(prog, str(path.relative_to(ROOT)))
    assert {"qemu-img", "nft", "tar", "conmon", "modprobe"} <= set(found)  # the scan works
    unknown = {p: f for p, f in found.items() if p not in PACKAGE_OF and p not in ELSEWHERE}
    assert not unknown, f"name their package in src/cumulo/host/tools.py: {unknown}"


def test_a_missing_program_is_one_line_naming_its_package(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))   # nothing is installed
    with pytest.raises(UnsupportedError) as err:
        storage_run(["qemu-img", "info", "x"])
    assert str(err.value) == ("qemu-img is not installed: apt-get install qemu-utils,"
                              " or run scripts/install.sh")
    with pytest.raises(UnsupportedError, match=r"^umoci is not installed \(needed to unpack"
                       r" an OCI image\): apt-get install umoci, or run scripts/install.sh$"):
        importer_run(["umoci", "unpack"], "unpack an OCI image")
    msg = str(not_installed("/usr/sbin/modprobe", "load the kernel module br_netfilter"))
    assert msg.startswith("modprobe is not installed (needed to load") and "kmod" in msg
    assert "\n" not in msg
