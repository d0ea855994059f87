"""vTPM start-up failures: never a QEMU without its swtpm, never an swtpm without its QEMU.

No guest boots here: the failing side is replaced by /bin/false. The guest seeing its
TPM is checked on a real boot in tests/system/test_vm_console.py.
"""

from __future__ import annotations

import shutil

import psutil
import pytest

from cumulo.drivers.base import RunStatus
from cumulo.errors import DriverError
from tests.integration.test_vm_driver import Env, env  # noqa: F401  (the fixture)

# ruff: noqa: F811   (tests take the imported env fixture as a parameter)

pytestmark = [pytest.mark.qemu]


def ours(env: Env, name: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == name and str(env.top) in " ".join(p.info["cmdline"] or [])]


@pytest.fixture(autouse=True)
def need_swtpm() -> None:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed")


def test_a_failing_swtpm_leaves_no_qemu(env: Env) -> None:
    spec = env.spec(machine="pc", tpm="on")
    env.driver.create(spec)
    env.driver.swtpm = "/bin/false"
    with pytest.raises(DriverError, match="swtpm socket failed"):
        env.driver.start(spec)
    assert env.driver.state(spec.host_id).status == RunStatus.STOPPED
    assert not ours(env, "qemu-system-x86_64")
    env.driver.delete(spec.host_id, spec.instance_dir)


def test_a_failing_qemu_stops_its_swtpm_and_delete_takes_the_tpm_state(env: Env) -> None:
    spec = env.spec(machine="pc", tpm="on")
    env.driver.create(spec)
    env.driver.qemu = "/bin/false"
    with pytest.raises(DriverError):
        env.driver.start(spec)
    assert not ours(env, "swtpm"), "swtpm left running without its QEMU"
    assert (spec.instance_dir / "tpm").is_dir()      # the TPM's state lives with the VM
    env.driver.delete(spec.host_id, spec.instance_dir)
    assert not spec.instance_dir.exists()

    assert env.driver.list_host_ids() == []
