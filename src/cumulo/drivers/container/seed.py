"""A system container's cloud-init seed: NoCloud files in its own root.

Where Incus's container images put it (their templates render it when the instance is
made): ``/var/lib/cloud/seed/nocloud-net/`` with meta-data, user-data and
network-config, the same files a VM gets on its ``cidata`` ISO (domain/cloud_init.py
renders both). They are written once, at create, into the mounted root, so they live
in the root's own files (the overlay's upper dir or the pool's): checkpoints,
migrations and root exports carry them like any other change.

The tree is the image's, so anything in it may be a symlink: each directory is opened
relative to the one above with ``O_NOFOLLOW`` (never a path string), and the files are
made new (``O_EXCL``) and renamed into place, owned by the container's root.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cumulo.domain import cloud_init
from cumulo.drivers.base import InstanceSpec
from cumulo.errors import DriverError

SEED_DIR = ("var", "lib", "cloud", "seed", "nocloud-net")
PATH = "/" + "/".join(SEED_DIR)
DIR_MODE = 0o755
FILE_MODE = 0o600          # user-data may hold passwords: root inside only
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def files(spec: InstanceSpec) -> dict[str, str]:
    """The seed of this instance: its host id as instance-id, its name, its NICs' MACs."""
    return cloud_init.seed_files(spec.host_id, spec.hostname, [mac for _n, mac in spec.nics],
                                 spec.user_data, spec.cloud_config, spec.ssh_keys)


def _open_dir(parent: int, name: str, owner: int) -> int:
    """``name`` under the directory ``parent`` (made, owned by ``owner``, if missing)."""
    made = False
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, DIR_MODE, dir_fd=parent)
        made = True
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    if made:
        os.fchown(fd, owner, owner)
    return fd


def _write_file(folder: int, name: str, text: str, owner: int) -> None:
    tmp = f".{name}.cumulo-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=folder)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE, dir_fd=folder)
    with os.fdopen(fd, "w") as out:
        os.fchown(fd, owner, owner)
        out.write(text)
    os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)


def write(root: Path, seed: dict[str, str], owner: int) -> None:
    """Put ``seed`` (file name -> text) in ``root``'s NoCloud seed directory."""
    fd = -1
    try:
        fd = os.open(root, _DIR_FLAGS)
        for part in SEED_DIR:
            child = _open_dir(fd, part, owner)
            os.close(fd)
            fd = child
        for name, text in seed.items():
            _write_file(fd, name, text, owner)
    except OSError as err:
        raise DriverError(f"cannot write the cloud-init seed ({PATH}) in the container's"
                          f" root: {err.strerror or err}") from err
    finally:
        if fd >= 0:
            os.close(fd)
