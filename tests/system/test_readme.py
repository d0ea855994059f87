"""The README's first command, run as a user would (the demo on the default daemon)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.slow]


def test_demo_script(tmp_path: Path) -> None:
    name = f"demo-{uuid.uuid4().hex[:6]}"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True,
                       text=True, timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                    "DEMO_NAME": name})
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"hello from {name}" in r.stdout
    assert "uid=0(root)" in r.stdout  # root inside the container...
    assert "cgroup_version" in r.stdout and "Built busybox" in r.stderr
    # ...and the demo cleaned up after itself
    assert name not in r.stdout.rsplit("$ cumulo list", 1)[1]
    assert not list(Path("/sys/fs/cgroup/memory").glob(f"*/default_{name}"))
