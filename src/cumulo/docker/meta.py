"""Facts only the Docker face knows, kept as small JSON files beside the store.

Per container: its Docker id, creation config (Config, HostConfig) and the last
start and finish times, its anonymous volumes. Per volume: whether it is anonymous.
Per image: its Docker tags (``busybox:latest``) and its
config (Cmd, Entrypoint, Env, WorkingDir, User). Cumulo's own store keeps the
instance and the image; these files are only the Docker-shaped extras.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from cumulo.domain.models import Instance, default_host_id


def _read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{threading.get_ident()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class Meta:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._ids: dict[str, str] = {}   # host id -> Docker id, kept after removal (events)
        self._hosts: dict[tuple[str, str], str] = {}   # (project, name) -> host id (renames)

    # containers
    def _cpath(self, host_id: str) -> Path:
        return self.root / "containers" / f"{host_id}.json"

    def container(self, inst: Instance) -> dict[str, Any]:
        """The container's Docker facts; an instance Docker did not create gets an id."""
        data = _read(self._cpath(inst.host_id))
        if not data.get("Id"):
            seed = f"{inst.host_id}/{inst.created_at}".encode()
            data["Id"] = hashlib.sha256(seed).hexdigest()
        self._ids[inst.host_id] = data["Id"]
        self._hosts[(inst.project, inst.name)] = inst.host_id
        return data

    def container_id(self, project: str, name: str) -> str:
        host_id = self._hosts.get((project, name)) or default_host_id(project, name)
        return str(_read(self._cpath(host_id)).get("Id") or self._ids.get(host_id)
                   or hashlib.sha256(host_id.encode()).hexdigest())

    def put_container(self, host_id: str, data: dict[str, Any]) -> None:
        self._ids[host_id] = data["Id"]
        with self._lock:
            _write(self._cpath(host_id), data)

    def update_container(self, inst: Instance, **changes: Any) -> dict[str, Any]:
        with self._lock:
            data = self.container(inst)
            data.update(changes)
            _write(self._cpath(inst.host_id), data)
        return data

    def any_containers(self) -> bool:
        """Whether Docker made any container (one directory listing, no file read)."""
        try:
            with os.scandir(self.root / "containers") as entries:
                return any(e.name.endswith(".json") for e in entries)
        except OSError:
            return False

    def running(self) -> set[str]:
        """Host ids of the containers Docker started and has not seen finish."""
        try:
            files = list((self.root / "containers").glob("*.json"))
        except OSError:
            return set()
        return {f.stem for f in files if _read(f).get("Running")}

    def drop_container(self, host_id: str) -> None:
        self._cpath(host_id).unlink(missing_ok=True)

    # volumes
    @property
    def _vpath(self) -> Path:
        return self.root / "volumes.json"

    def anonymous(self) -> set[str]:
        """Volumes made for a container's ``-v /path``: ``rm -v`` and prune take them."""
        return set(_read(self._vpath).get("anonymous") or [])

    def mark_anonymous(self, name: str) -> None:
        with self._lock:
            _write(self._vpath, {"anonymous": sorted(self.anonymous() | {name})})

    def forget_volume(self, name: str) -> None:
        with self._lock:
            if name in (known := self.anonymous()):
                _write(self._vpath, {"anonymous": sorted(known - {name})})

    # images
    @property
    def _ipath(self) -> Path:
        return self.root / "images.json"

    def images(self) -> dict[str, Any]:
        data = _read(self._ipath)
        data.setdefault("tags", {})
        data.setdefault("configs", {})
        return data

    def tag(self, tag: str, fingerprint: str) -> None:
        with self._lock:
            data = self.images()
            data["tags"][tag] = fingerprint
            _write(self._ipath, data)

    def untag(self, tag: str) -> None:
        with self._lock:
            data = self.images()
            data["tags"].pop(tag, None)
            _write(self._ipath, data)

    def set_config(self, fingerprint: str, config: dict[str, Any]) -> None:
        with self._lock:
            data = self.images()
            data["configs"][fingerprint] = config
            _write(self._ipath, data)

    def forget_image(self, fingerprint: str) -> None:
        with self._lock:
            data = self.images()
            data["tags"] = {t: f for t, f in data["tags"].items() if f != fingerprint}
            data["configs"].pop(fingerprint, None)
            _write(self._ipath, data)
