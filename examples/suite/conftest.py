"""Fixtures of the demo suite: a fake weather API served on loopback."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

# The port of the stub that test_small.py::test_stub_on_a_fixed_port may reach. A marker
# is written before the test runs, so a rule for one port needs a port known in advance.
STUB_PORT = 8765


class FakeWeatherAPI(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        city = parse_qs(urlsplit(self.path).query).get("city", ["?"])[0]
        body = json.dumps({"city": city, "temperature": 21.4}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep the output quiet
        pass


@contextlib.contextmanager
def serve(port: int = 0) -> Iterator[tuple[str, int]]:
    """Run the fake API on 127.0.0.1:port (0: any free port) in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", port), FakeWeatherAPI)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def weather_server() -> Iterator[tuple[str, int]]:
    """(host, port) of the fake weather API, on loopback, on a free port."""
    with serve() as address:
        yield address


@pytest.fixture
def stub_server() -> Iterator[tuple[str, int]]:
    """(host, port) of the fake weather API on loopback, on the fixed port STUB_PORT."""
    with serve(STUB_PORT) as address:
        yield address


class FakeMetrics:
    """A metrics client that keeps counters in memory."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def incr(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


@pytest.fixture
def fake_metrics() -> FakeMetrics:
    return FakeMetrics()
