"""Hostile input on the two host-to-host routes the fuzzers reach only shallowly (the fake
driver moves no instance): ``POST /migrations/incoming`` past its first checks, and the
state part of ``PUT /migrations/incoming/{name}/state/{part}``. Each is refused in one
line, before anything is made, and no part is written outside the instance's dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cumulo.errors import InvalidInputError
from cumulo.services import archive_migration
from cumulo.services.host import Services

BODY = {"name": "rx", "type": "container", "image": "testimg", "signature": "s"}


@pytest.mark.parametrize(("body", "status", "words"), [
    ({**BODY, "name": "../x"}, 400, "invalid instance name"),
    ({**BODY, "name": "a\nb"}, 400, "invalid instance name"),
    ({**BODY, "type": "../../x"}, 400, "unknown instance type"),
    ({**BODY, "type": "vm\n"}, 400, "unknown instance type"),
    # the image named in the refusal was echoed raw: a newline made it two lines
    ({**BODY, "image": "ab\ncd\r\nef"}, 409, "lacks image"),
    ({**BODY, "image": "../../etc/passwd"}, 409, "lacks image"),
    ({**BODY, "pad": "x" * (2 << 20)}, 413, "too large"),
])
def test_incoming_refuses_hostile_bodies(svc: Services, api: TestClient,
                                         monkeypatch: pytest.MonkeyPatch, body: dict[str, Any],
                                         status: int, words: str) -> None:
    svc.migrations.listen_host = "127.0.0.1"
    # as if the fake driver moved containers as state files, so the checks go on
    if body["type"] == "container":
        monkeypatch.setattr(svc.migrations, "_archive_driver", lambda type_: object())
    r = api.post("/1.0/migrations/incoming", json=body)
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert words in msg and "\n" not in msg and "\r" not in msg, msg
    assert api.get("/1.0/instances").json() == []


@pytest.mark.parametrize("part", ["../../etc/passwd", "/etc/passwd", "memory/../../x", "",
                                  "memory\n", ".", "..", "rootfs\0"])
def test_state_parts_are_named_not_paths(tmp_path: Path, part: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown state part") as err:
        archive_migration.part_path(tmp_path / "inst", part)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("path", [
    "/1.0/migrations/incoming/x/state/..%2F..%2Fetc%2Fpasswd",
    "/1.0/migrations/incoming/..%2F..%2Fx/state/memory",
    "/1.0/migrations/incoming/x%0Ay/state/memory",
    "/1.0/migrations/incoming/x/state/memory?project=a%0Ab",
])
def test_state_upload_with_path_tricks(api: TestClient, path: str) -> None:
    r = api.put(path, content=b"data")
    assert r.status_code == 404, r.text
    assert "\n" not in r.json()["error"]
