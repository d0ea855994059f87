"""A VM's cloud-init seed: a NoCloud ISO labelled ``cidata`` in the instance dir.

The same disk cloud-init's documentation, Proxmox and OpenStack's config drive make:
``genisoimage -volid cidata -joliet -rock`` of meta-data, user-data and
network-config (domain/cloud_init.py writes them). QEMU shows it to the guest as
a read-only disk (qemu_cmd.py); it goes away with the instance dir.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cumulo.domain import cloud_init
from cumulo.errors import DriverError
from cumulo.host.tools import not_installed

FILE = "cidata.iso"
LABEL = "cidata"
TOOL = "genisoimage"
TIMEOUT = 30.0


def make(instance_dir: Path, instance_id: str, hostname: str, macs: list[str],
         user_data: str | None, cloud_config: dict[str, Any],
         ssh_keys: tuple[str, ...]) -> Path:
    """Write the seed ISO of one VM; its path."""
    files = cloud_init.seed_files(instance_id, hostname, macs, user_data, cloud_config,
                                  ssh_keys)
    out = instance_dir / FILE
    with tempfile.TemporaryDirectory(prefix=".seed-", dir=instance_dir) as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        argv = [shutil.which(TOOL) or TOOL, "-quiet", "-output", str(out), "-volid", LABEL,
                "-joliet", "-rock", *(str(Path(tmp) / n) for n in files)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                                  check=False)
        except FileNotFoundError:
            raise not_installed(TOOL, "give VMs their cloud-init seed") from None
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DriverError(f"cannot make the cloud-init seed: {err}") from err
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        out.unlink(missing_ok=True)
        raise DriverError(f"{TOOL} failed: {lines[-1]}")
    return out
