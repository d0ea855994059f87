"""Named fault points: where a test can make the daemon die, to prove what a restart recovers.

``point("create.after_rootfs")`` does nothing unless the daemon was started with
``CUMULO_FAULT`` naming that point (several: comma-separated); then the process ends
there at once with ``os._exit(137)``, as a SIGKILL would leave it: no undo, no cleanup,
no flushed buffers. Unarmed, a point costs one set lookup.

``POINTS`` lists every point the code has (a unit test checks each is really placed).
"""

from __future__ import annotations

import os
import sys

ENV = "CUMULO_FAULT"
EXIT_CODE = 137   # what a shell reports for a SIGKILLed process

POINTS = (
    # instances (services/instances.py, drivers/container/driver.py)
    "create.after_record", "create.after_rootfs", "create.after_driver",
    "start.after_conmon", "start.after_driver", "stop.after_driver", "delete.after_driver",
    # snapshots, checkpoints, volumes (services/volumes.py, checkpoints.py)
    "snapshot.after_create", "checkpoint.after_save", "restore.after_driver",
    "volume.attach.before_record",
    "vm.start.after_swtpm", "vm.start.after_qemu",
    # networks (services/networks.py)
    "network.create.after_bridge", "network.delete.after_record",
    # migration, both sides (services/migrations.py)
    "migrate.source.after_incoming", "migrate.source.after_send",
    "migrate.source.after_finish", "migrate.dest.after_prepare", "migrate.dest.after_finish",
)

_ARMED = frozenset(p for p in os.environ.get(ENV, "").split(",") if p)


def point(name: str) -> None:
    """Die here if this point is armed (see the module docstring)."""
    if name in _ARMED:
        print(f"cumulod: fault point {name} reached: exiting", file=sys.stderr, flush=True)
        os._exit(EXIT_CODE)
