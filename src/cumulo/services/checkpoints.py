"""Save a running instance's whole state and run it again from there, on this host.

The driver must offer `cumulo.drivers.migratable.Checkpointable` (VMs do; containers do
through CRIU 4.x, and say so clearly when the host has none). The state goes to
``<instance dir>/checkpoint.state`` unless the user names a file; restoring from the
default file removes it, so an instance has at most one pending stateful stop, like
``incus stop --stateful``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from cumulo import faults
from cumulo.domain.lifecycle import Action, State, guard
from cumulo.domain.models import Operation
from cumulo.drivers.migratable import Checkpointable
from cumulo.errors import CumuloError, InvalidInputError, NotFoundError, UnsupportedError
from cumulo.host import space
from cumulo.services.instances import InstanceService
from cumulo.services.operations import Progress

DEFAULT_FILE = "checkpoint.state"


class CheckpointService:
    def __init__(self, instances: InstanceService) -> None:
        self.instances = instances

    def _driver(self, type_: str) -> Checkpointable:
        driver = self.instances._driver(type_)
        if not isinstance(driver, Checkpointable):
            raise UnsupportedError(
                f"{type_} instances cannot be checkpointed: stop and start them instead")
        return driver

    def _path(self, host_id: str, file: str | None) -> Path:
        if file is None:
            return self.instances.instances_dir / host_id / DEFAULT_FILE
        path = Path(file)
        if not path.is_absolute():
            raise InvalidInputError(f"--file must be an absolute path on the daemon's host,"
                                    f" not {file!r}")
        return path

    def checkpoint(self, project: str, name: str, file: str | None) -> Operation:
        inst = self.instances.get(project, name)
        guard(name, inst.state, Action.CHECKPOINT)
        driver = self._driver(inst.type)
        path = self._path(inst.host_id, file)
        if file is not None and path.exists():
            raise InvalidInputError(f"{path} exists: checkpoints never overwrite a file")

        def work(progress: Progress) -> dict[str, Any]:
            with self.instances._locked(inst):
                progress(0.1, "saving memory and device state")
                where = "the state dir" if file is None else "the checkpoint's directory"
                with space.guard(where, path.parent, f"checkpoint {name!r}"):
                    stats = driver.checkpoint(inst.host_id, path)
                faults.point("checkpoint.after_save")
                self.instances.store.update_instance(project, name, state=State.STOPPED,
                                                     exit_code=None)
                self.instances.events.lifecycle("checkpointed", project, name, file=str(path))
                with contextlib.suppress(CumuloError):
                    self.instances.networks.detach(inst)
                return {"file": str(path), **stats}

        return self.instances.ops.submit(f"checkpoint instance {name}", work,
                                         {"instances": [f"{project}/{name}"]})

    def restore(self, project: str, name: str, file: str | None) -> Operation:
        inst = self.instances.get(project, name)
        guard(name, inst.state, Action.RESTORE)
        driver = self._driver(inst.type)
        path = self._path(inst.host_id, file)
        if not path.is_file():
            raise NotFoundError("checkpoint", str(path))

        def work(progress: Progress) -> dict[str, Any]:
            with self.instances._locked(inst):
                progress(0.1, "loading memory and device state")
                try:
                    driver.restore(self.instances._spec(inst), path)
                except BaseException:
                    with contextlib.suppress(CumuloError):
                        self.instances.networks.detach(inst)
                    raise
                faults.point("restore.after_driver")
                self.instances.store.update_instance(project, name, state=State.RUNNING,
                                                     exit_code=None, last_error=None)
                self.instances.events.lifecycle("restored", project, name, file=str(path))
                if file is None:
                    path.unlink(missing_ok=True)
                return {"file": str(path)}

        return self.instances.ops.submit(f"restore instance {name}", work,
                                         {"instances": [f"{project}/{name}"]})
