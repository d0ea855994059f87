"""Specialised kernels: the configuration a request means, the check that it took, the
cache key, and one-line errors for a missing source or toolchain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cumulo.errors import InvalidInputError, UnsupportedError
from cumulo.images import builders, kernel_build, kernel_config
from cumulo.services.images import ALIAS_RE


def test_features_are_known_unique_and_sorted() -> None:
    assert kernel_config.parse_features("net, block,net") == ("block", "net")
    assert kernel_config.parse_features(None) == ()
    with pytest.raises(InvalidInputError, match="unknown kernel feature 'gpu'"):
        kernel_config.parse_features("net,gpu")


def test_the_fragment_is_the_profile_plus_its_features() -> None:
    text = kernel_config.fragment("app", ("net",))
    want = kernel_config.requested(text)
    assert want["CONFIG_PVH"] == "y" and want["CONFIG_VIRTIO_NET"] == "y"
    assert want["CONFIG_INPUT"] == "n"
    with pytest.raises(InvalidInputError, match="unknown kernel profile 'desktop'"):
        kernel_config.fragment("desktop", ())


def test_unmet_names_options_the_final_config_lacks() -> None:
    frag = "CONFIG_PVH=y\nCONFIG_INPUT=n\nCONFIG_LOG_BUF_SHIFT=12\n"
    config = "CONFIG_PVH=y\n# CONFIG_INPUT is not set\nCONFIG_LOG_BUF_SHIFT=12\n"
    assert kernel_config.unmet(frag, config) == []
    assert kernel_config.unmet(frag, "CONFIG_INPUT=y\n") == [
        "CONFIG_PVH=y (got n)", "CONFIG_INPUT=n (got y)", "CONFIG_LOG_BUF_SHIFT=12 (got n)"]


def test_the_cache_key_changes_with_source_toolchain_and_fragment() -> None:
    key = kernel_config.cache_key("linux-source-6.1 6.1.1-1", "gcc 12", "CONFIG_X=y\n")
    assert key == kernel_config.cache_key("linux-source-6.1 6.1.1-1", "gcc 12", "CONFIG_X=y\n")
    assert len({key, kernel_config.cache_key("linux-source-6.1 6.1.1-2", "gcc 12", "CONFIG_X=y\n"),
                kernel_config.cache_key("linux-source-6.1 6.1.1-1", "gcc 13", "CONFIG_X=y\n"),
                kernel_config.cache_key("linux-source-6.1 6.1.1-1", "gcc 12", "CONFIG_Y=y\n")}
               ) == 4


def test_build_requests_are_checked_before_anything_runs() -> None:
    p = builders.prepare("kernel", builders.BuildOptions(features=("net", "block")))
    assert p.alias == "kernel/app-block-net"
    assert ALIAS_RE.match(p.alias)          # an alias the image store takes
    with pytest.raises(InvalidInputError, match="^--variant does not apply to the kernel"):
        builders.prepare("kernel", builders.BuildOptions(variant="standard"))
    with pytest.raises(InvalidInputError, match="^--profile does not apply to the busybox"):
        builders.prepare("busybox", builders.BuildOptions(profile="app"))


def test_missing_source_or_toolchain_is_one_line_naming_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnsupportedError, match=r"^the kernel source is not installed \(needed"
                       r" to build a kernel\): apt-get install linux-source, or run"):
        kernel_build.find_source(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UnsupportedError, match=r"^make is not installed \(needed to build a"
                       r" kernel\): apt-get install make, or run scripts/install.sh$"):
        kernel_build.check_toolchain()


def test_a_damaged_cache_entry_is_not_a_hit(tmp_path: Path) -> None:
    result = tmp_path / "result"
    result.mkdir()
    for name in kernel_build.RESULT_FILES:
        (result / name).write_bytes(name.encode())
    sums = {n: kernel_build._sha(result / n) for n in kernel_build.RESULT_FILES}
    (result / "build.json").write_text(json.dumps(
        {"release": "6.1", "source": "s", "build_seconds": "1", "sha256": sums}))
    assert kernel_build._cached(tmp_path) is not None
    (result / "bzImage").write_bytes(b"damaged")
    assert kernel_build._cached(tmp_path) is None
    (result / "bzImage").unlink()
    assert kernel_build._cached(tmp_path) is None


def test_tpm_is_a_fragment_for_microvm_s_tis_tpm() -> None:
    assert kernel_config.parse_features("tpm,net") == ("net", "tpm")
    want = kernel_config.requested(kernel_config.fragment("app", ("tpm",)))
    assert want["CONFIG_TCG_TPM"] == "y" and want["CONFIG_TCG_TIS"] == "y"


def test_an_app_vm_s_tpm_needs_a_kernel_with_the_tpm_driver(tmp_path: Path) -> None:
    """Refused in one line naming why and what to build; the probe is forced on the
    command line (microvm's ACPI describes no TPM), before the program's arguments."""
    from cumulo.drivers.vm import appvm, tpm

    with pytest.raises(InvalidInputError, match=r"^--tpm on an app VM needs a kernel with the"
                       r" TPM driver built in \(Debian's kernel has it as a module.*"
                       r"cumulo image build kernel --with tpm$"):
        appvm._kernel(None, ("tpm",))
    boot = tmp_path / ("f" * 12) / "boot"
    boot.mkdir(parents=True)
    (boot / "vmlinux").write_bytes(b"")
    (boot / "config").write_text("CONFIG_PVH=y\n# CONFIG_TCG_TIS is not set\n")
    with pytest.raises(InvalidInputError, match="kernel image ffffffffffff has none"):
        appvm._kernel(boot, ("tpm",))
    assert appvm._kernel(boot) == boot / "vmlinux"
    (boot / "config").write_text("CONFIG_PVH=y\nCONFIG_TCG_TIS=y\n")
    assert appvm._kernel(boot, ("tpm",)) == boot / "vmlinux"
    # and a NIC needs virtio-net and the kernel's DHCP client
    with pytest.raises(InvalidInputError, match=r"^a NIC \(--network, or the project's network"
                       r" 'default'\) on an app VM needs a kernel with virtio-net and DHCP"
                       r" built in \(kernel image ffffffffffff has none\): cumulo image build"
                       r" kernel --with net, or launch with --network none$"):
        appvm._kernel(boot, ("net", "tpm"))
    append = appvm.app_append("hello", ["a"], None, tuple(tpm.MICROVM_APPEND.split()))
    assert append.endswith(f"{tpm.MICROVM_APPEND} rdinit=/hello -- a"), append


def test_an_app_vm_with_a_nic_has_the_kernel_s_dhcp_before_the_program_s_arguments() -> None:
    """Added at create or at a start with a NIC attached since, taken out once it is
    detached; the program's own ip=dhcp (after "--") is its argument and stays."""
    from cumulo.drivers.vm import appvm

    append = appvm.app_append("app", ["ip=dhcp", "x"])
    assert append.endswith("rdinit=/app -- ip=dhcp x") and append.count("ip=dhcp") == 1
    with_nic = appvm._with_dhcp(append, True)
    assert with_nic.endswith("rdinit=/app ip=dhcp -- ip=dhcp x"), with_nic
    assert appvm._with_dhcp(with_nic, True) == with_nic
    assert appvm._with_dhcp(with_nic, False) == append
