"""Maps pool driver names to factories, and opens the pool a ``RootSpec`` names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cumulo.errors import InvalidInputError
from cumulo.storage.base import RootSpec, StoragePool
from cumulo.storage.dir import DirPool

DEFAULT_POOL = "default"

PoolFactory = Callable[[str, Path], StoragePool]
FACTORIES: dict[str, PoolFactory] = {"dir": DirPool}


def open_pool(name: str, driver: str, path: Path) -> StoragePool:
    try:
        factory = FACTORIES[driver]
    except KeyError:
        raise InvalidInputError(
            f"unknown storage driver {driver!r}: use one of {', '.join(sorted(FACTORIES))}"
        ) from None
    return factory(name, path)


def pool_of(root: RootSpec) -> StoragePool:
    return open_pool(root.pool, root.driver, root.path)
