"""cumulod with its store on PostgreSQL (the suite's throwaway server): a container
launched, the daemon restarted, the container still known and running."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.system.conftest import running_daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime,
              pytest.mark.postgres]


def test_daemon_keeps_its_instances_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")  # as a user writes it
    with running_daemon(tmp_path, extra=("--database", plain)) as d:
        d.cli("image", "build", "busybox")
        d.cli("launch", "busybox", "keep")
        pid = json.loads(d.cli("info", "keep", "--format", "json").stdout)["pid"]
        d.stop(signal.SIGTERM)
        d.start()
        info = json.loads(d.cli("info", "keep", "--format", "json").stdout)
        assert (info["state"], info["pid"]) == ("running", pid)
        assert d.cli("exec", "keep", "--", "echo", "still here").stdout == "still here\n"
        assert not (d.state_dir / "cumulo.db").exists()  # no SQLite on the side
        engine = create_engine(pg_url)
        try:
            with engine.connect() as conn:
                names = conn.execute(text("SELECT name FROM instances")).scalars().all()
        finally:
            engine.dispose()
        assert names == ["keep"]
