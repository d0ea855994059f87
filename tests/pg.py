"""A throwaway PostgreSQL server for the tests: initdb and pg_ctl into a temp dir, a unix
socket in that dir and no TCP at all; one server per pytest process (xdist worker)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian: versioned, not on PATH
SUPERUSER = "cumulo"


def bindir() -> Path | None:
    """The newest installed server's binaries (Debian layout), else initdb on PATH."""
    found = [Path(d) for d in glob.glob(BIN_GLOB) if (Path(d) / "initdb").exists()]
    if found:
        return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def skip_reason() -> str | None:
    """Why no throwaway server can start here, or None."""
    if bindir() is None:
        return "needs PostgreSQL's initdb and pg_ctl (scripts/install.sh installs postgresql)"
    if os.geteuid() == 0 and _account() is None:
        return "needs an unprivileged account to run PostgreSQL as ('postgres' or 'nobody')"
    return None


def _account() -> pwd.struct_passwd | None:
    """Who runs the server when we are root: PostgreSQL refuses to run as root."""
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def reap_orphans() -> None:
    """Stop and remove the servers of pytest processes that were killed (no teardown ran):
    their dir names the pid that made them."""
    for d in Path(tempfile.gettempdir()).glob("cumulo-pg-*-*"):
        pid = d.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                PgServer(adopt=d).stop()
            except (RuntimeError, OSError, subprocess.SubprocessError):
                shutil.rmtree(d, ignore_errors=True)


class PgServer:
    """One postgres on a unix socket in its own temp dir; ``stop()`` removes it all.
    ``adopt``: the dir of a server someone else started (to stop it)."""

    def __init__(self, adopt: Path | None = None) -> None:
        found = bindir()
        if found is None:
            raise RuntimeError(skip_reason())
        self.bin = found
        acct = _account() if os.geteuid() == 0 else None
        self._as: dict[str, Any] = {} if acct is None else {
            "user": acct.pw_uid, "group": acct.pw_gid, "extra_groups": []}
        if adopt is not None:
            self.dir, self.started = adopt, True
        else:
            reap_orphans()
            # not under pytest's 0700 temp root: the server's account must reach this dir
            self.dir = Path(tempfile.mkdtemp(prefix=f"cumulo-pg-{os.getpid()}-"))
            if acct is not None:
                os.chown(self.dir, acct.pw_uid, acct.pw_gid)
            os.chmod(self.dir, 0o755)
            self.started = False
        self.data = self.dir / "data"

    def _run(self, *args: str) -> None:
        proc = subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.dir,
                              capture_output=True, text=True, timeout=120, **self._as)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stderr or proc.stdout}")

    def start(self) -> PgServer:
        """initdb (no fsync: the data is thrown away) and start on the socket only."""
        try:
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                      "--no-sync", "-E", "UTF8", "--locale=C")
            opts = (f"-c listen_addresses='' -c unix_socket_directories='{self.dir}'"
                    " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                    " -c max_connections=200")
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"),
                      "-o", opts, "-w", "-t", "60", "start")
            self.started = True
        except BaseException:
            self.stop()
            raise
        return self

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.dir}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.dir), user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # our own literal SQL

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast: sessions cut, a quick checkpoint) and remove its dir;
        safe to call twice."""
        if self.started and (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60",
                      "stop")
        self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
