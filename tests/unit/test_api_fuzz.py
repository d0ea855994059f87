"""API fuzzing: schemathesis sends generated requests, valid and not, for every operation in
docs/openapi.json to a real HTTP server (uvicorn on loopback) of the daemon's app, on
services with the fake driver and network. Every answer: no 5xx, the documented schema
when the status is documented, and every 4xx a JSON error with a one-line message.
Bounded: ``EXAMPLES`` per operation, no shrinking of what it finds.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from cumulo.api.app import create_app
from tests.unit.conftest import fake_services

EXAMPLES = int(os.environ.get("CUMULO_FUZZ_EXAMPLES", "12"))   # a longer hunt: more
DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
schema = schemathesis.openapi.from_path(DOC)
# valid requests and broken ones (wrong types, missing fields, out-of-range numbers)
schema.config.generation.update(modes=list(GenerationMode), max_examples=EXAMPLES)
SEEN: dict[int, int] = {}   # statuses answered, for the summary test


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_services(tmp_path_factory.mktemp("fuzz")) as svc:
        svc.migrations.listen_host = "127.0.0.1"   # the host-to-host routes are open too
        port = _port()
        server = uvicorn.Server(uvicorn.Config(create_app(svc), host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(30)


def one_line_error(ctx: Any, response: Any, case: Any) -> bool:
    """A 4xx says what is wrong in one line of JSON ``{"error": ...}``."""
    if 400 <= response.status_code < 500:
        body = json.loads(response.content or b"{}")
        msg = body.get("error") if isinstance(body, dict) else None
        assert isinstance(msg, str) and msg.strip(), f"4xx without an error message: {body}"
        assert "\n" not in msg.strip(), f"4xx message of several lines: {msg!r}"
    return True


# one plain pytest test per operation (schemathesis' own parametrize collects only a few
# items under pytest-xdist with several workers), hypothesis drawing its cases
OPERATIONS = [r.ok() for r in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[o.label for o in OPERATIONS])
def test_api_fuzz(operation: Any, base_url: str) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(*(operation.as_strategy(mode) for mode in GenerationMode)))
    def check(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=30)
        SEEN[response.status_code] = SEEN.get(response.status_code, 0) + 1
        one_line_error(None, response, case)
        case.validate_response(response,
                               checks=[not_a_server_error, response_schema_conformance])

    check()


def test_fuzz_reached_the_routes() -> None:
    """The run above really sent requests, and got both answers and refusals."""
    if not SEEN:
        pytest.skip("run with test_api_fuzz")
    print(f"statuses answered: {dict(sorted(SEEN.items()))}")
    assert sum(SEEN.values()) > 200
    assert any(200 <= s < 300 for s in SEEN) and any(400 <= s < 500 for s in SEEN)


# hostile input found by hand and by the fuzzer: kept as regression tests
HOSTILE = [
    # (method, path, json body or raw bytes, status, words in the error)
    ("POST", "/1.0/volumes", {"name": "v", "size": 10**40}, 400, "far too large"),  # was 500
    ("POST", "/1.0/volumes", {"name": "v", "size": "9999999999999EiB"}, 400, "invalid size"),
    ("POST", "/1.0/volumes", {"name": "v", "size": -5}, 400, "must not be negative"),
    ("POST", "/1.0/instances", {"name": "../x", "image": "testimg"}, 400, "invalid instance"),
    ("POST", "/1.0/instances", {"name": "x\udcff".encode("utf-8", "surrogateescape")
                                .decode("latin-1"), "image": "testimg"}, 400, "invalid"),
    ("POST", "/1.0/networks", {"name": "n", "subnet": "10.0.0.0/99"}, 400, "subnet"),
    # found by schemathesis: the fingerprint was echoed raw, newline and all
    ("DELETE", "/1.0/migrations/images/%92%0AZ", None, 400, "not an image fingerprint"),
    ("POST", "/1.0/instances",
     b'{"name": "big", "image": "testimg", "pad": "' + b"x" * (2 << 20) + b'"}', 413,
     "too large"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), HOSTILE)
def test_hostile_input(base_url: str, method: str, path: str, body: Any, status: int,
                       words: str) -> None:
    import httpx

    kw: dict[str, Any] = {} if body is None else {"json": body} if not isinstance(
        body, bytes) else {"content": body, "headers": {"content-type": "application/json"}}
    r = httpx.request(method, base_url + path, timeout=30, **kw)
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert words in msg and "\n" not in msg, msg
