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
from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from cumulo.errors import StoreError
from cumulo.store.tables import Base

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


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL; a plain ``postgresql://`` (or ``postgres://``) goes through
    psycopg 3, the driver Cumulo installs."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError as err:  # ArgumentError: not a URL at all
        raise StoreError(f"not a database URL: {url!r} (e.g. sqlite:///PATH,"
                         " postgresql://USER@HOST/DB)") from err
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def shown(url: str | URL) -> str:
    """A URL for messages: the password hidden."""
    try:
        return (make_url(url) if isinstance(url, str) else url).render_as_string(
            hide_password=True)
    except SQLAlchemyError:
        return "(not a URL)"


def make_engine(url: str) -> Engine:
    """An engine for ``sqlite:///path``, ``sqlite://`` (memory) or a PostgreSQL URL."""
    parsed = parse_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
            if is_memory(url):
                kwargs["poolclass"] = StaticPool
            engine = create_engine(parsed, **kwargs)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(parsed, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as err:
        raise StoreError(f"cannot open database {shown(parsed)}: {err}") from err
    return engine


def _empty(conn: Connection) -> bool:
    """No table at all: a database this store has never written."""
    return not inspect(conn).get_table_names()


def migrate(engine: Engine, replay: bool = False) -> None:
    """Bring the schema to the newest alembic revision. An empty database gets the
    tables at once (``tables.py``) and is stamped with the newest revision, instead of
    replaying every revision since the first (1-1.5 s of a busy host's CPU at every
    fresh daemon or store; ``tests/contract/test_store_engines.py`` holds the two
    schemas to the same tables). ``replay``: replay them anyway."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as conn:
            # SQLite rebuilds a table to change it (batch mode): with foreign keys on, the
            # old table's drop would cascade to (or be refused by) the rows that point at
            # it. Off for the upgrade (it only works outside a transaction), checked after.
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            try:
                with conn.begin():
                    cfg.attributes["connection"] = conn
                    if not replay and _empty(conn):
                        Base.metadata.create_all(conn)
                        command.stamp(cfg, "head")
                    else:
                        command.upgrade(cfg, "head")
                    if sqlite and (bad := conn.exec_driver_sql(
                            "PRAGMA foreign_key_check").fetchall()):
                        raise StoreError(f"database migration broke references: {bad[:3]}")
            finally:
                if sqlite:
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    conn.commit()
    except CommandError as err:  # e.g. a revision this version does not know
        raise StoreError(
            f"the database {shown(engine.url)} has a schema this cumulod does not know ({err});"
            " it was written by a newer version: run that version, or use another state dir"
        ) from err
    except OperationalError as err:  # the server is not there, refuses us, ...
        first = str(err.orig or err).strip().splitlines()[0]
        raise StoreError(f"cannot use the database {shown(engine.url)}: {first}") from err
    except SQLAlchemyError as err:
        raise StoreError(f"database migration failed: {err}") from err


class Database:
    """Sessions over one engine; every store call goes through ``session()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            migrate(self.engine)
        except BaseException:
            self.engine.dispose()  # no pooled connection outlives a store that failed to open
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # one shared connection cannot hold two transactions: sessions take turns
        self._turn: AbstractContextManager[object] = (
            threading.RLock() if is_memory(url) else nullcontext())

    @contextmanager
    def session(self, modify: bool = False) -> Iterator[Session]:
        """One transaction. ``modify``: it reads rows to write back something made from
        them; on SQLite it takes the write lock first (BEGIN IMMEDIATE) so no other writer
        slips in between, on PostgreSQL its reads lock their rows (``with_for_update``)."""
        with self._turn:
            s = self._sessions()
            try:
                if modify and self.engine.dialect.name == "sqlite":
                    s.execute(text("BEGIN IMMEDIATE"))
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
