"""One small JSON record per instance: how a driver finds its instances after a restart.

Drivers keep nothing in memory; the record says where an instance's files are and
how it was built, and is written atomically (temp file, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cumulo.errors import DriverError


class Records:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, host_id: str) -> Path:
        return self.root / f"{host_id}.json"

    def get(self, host_id: str) -> dict[str, Any] | None:
        """The record, or None when the driver has no such instance."""
        try:
            data: dict[str, Any] = json.loads(self.path(host_id).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise DriverError(f"unreadable record of instance {host_id!r}: {err}") from err
        return data

    def put(self, host_id: str, record: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path(host_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.rename(self.path(host_id))

    def remove(self, host_id: str) -> None:
        self.path(host_id).unlink(missing_ok=True)

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.is_dir() else []
