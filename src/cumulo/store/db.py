"""Engine, sessions and migrations: the one module that talks to the database engine."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from cumulo.errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; no fsync per commit
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def is_memory(url: str) -> bool:
    """An in-memory SQLite URL: one connection that all threads share."""
    return url in ("sqlite://", "sqlite:///:memory:")


def make_engine(url: str) -> Engine:
    """An engine for ``sqlite:///path``, ``sqlite://`` (memory) or a PostgreSQL URL."""
    try:
        if url.startswith("sqlite"):
            kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
            if is_memory(url):
                kwargs["poolclass"] = StaticPool
            engine = create_engine(url, **kwargs)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as err:
        raise StoreError(f"cannot open database {url}: {err}") from err
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest alembic revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except CommandError as err:  # e.g. a revision this version does not know
        raise StoreError(
            f"the database {engine.url!r} has a schema this cumulod does not know ({err});"
            " it was written by a newer version: run that version, or use another state dir"
        ) from err
    except SQLAlchemyError as err:
        raise StoreError(f"database migration failed: {err}") from err


class Database:
    """Sessions over one engine; every store call goes through ``session()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # one shared connection cannot hold two transactions: sessions take turns
        self._turn: AbstractContextManager[object] = (
            threading.RLock() if is_memory(url) else nullcontext())

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._turn:
            s = self._sessions()
            try:
                yield s
                s.commit()
            except SQLAlchemyError as err:
                s.rollback()
                raise StoreError(f"database error: {err.__class__.__name__}: {err}") from err
            except BaseException:
                s.rollback()
                raise
            finally:
                s.close()

    def close(self) -> None:
        self.engine.dispose()
