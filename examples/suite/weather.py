"""The code under test of the demo suite: a tiny weather client and the service around it.

Nothing here knows about netguard. It has the habits that make real code reach the
network from unit tests: clients built with production defaults when none is passed in,
a fallback that swallows errors, and a fire-and-forget metrics client.
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from urllib.parse import quote

# Production endpoints. They are reserved for documentation (RFC 2606, RFC 5737), so
# nothing answers there; the demo runs in a private network namespace anyway.
API = ("api.weather.example", 80)  # the weather API, by name
MIRROR = ("192.0.2.10", 80)  # a mirror of it, by address
METRICS_RELAY = ("198.51.100.7", 8125)  # a statsd-style relay (UDP)

# What headline() shows when the API's name does not resolve (no DNS: we are offline).
LAST_KNOWN = {"Oslo": 4.0, "Lisbon": 19.0}


@dataclass(frozen=True)
class Reading:
    city: str
    temperature: float


def parse_reading(body: bytes) -> Reading:
    data = json.loads(body)
    return Reading(city=str(data["city"]), temperature=float(data["temperature"]))


class WeatherClient:
    """GET /v1/current?city=... from a weather API over HTTP."""

    def __init__(self, host: str = API[0], port: int = API[1], timeout: float = 2.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout

    def current(self, city: str) -> Reading:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", "/v1/current?city=" + quote(city))
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"weather API answered {response.status}")
            return parse_reading(body)
        finally:
            conn.close()


def headline(city: str, client: WeatherClient | None = None) -> str:
    """'Oslo: 4°C'. Uses the last known value when the API's name does not resolve."""
    client = client or WeatherClient()
    try:
        temperature = client.current(city).temperature
    except socket.gaierror:  # offline: no DNS
        temperature = LAST_KNOWN[city]
    return f"{city}: {temperature:.0f}°C"


def describe(city: str, client: WeatherClient | None = None) -> str:
    """Like headline(), from the mirror, and it never fails: any error gives 'no data'."""
    client = client or WeatherClient(*MIRROR)
    try:
        return f"{city}: {client.current(city).temperature:.0f}°C"
    except Exception:  # noqa: BLE001 - the habit being demonstrated
        return f"{city}: no data"


class Metrics:
    """A fire-and-forget metrics client: one UDP datagram per counter, errors ignored."""

    def __init__(self, address: tuple[str, int] = METRICS_RELAY) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def incr(self, name: str) -> None:
        try:
            self.sock.sendto(f"{name}:1|c".encode(), self.address)
        except OSError:
            pass  # metrics must never break the app

    def close(self) -> None:
        self.sock.close()


class ForecastService:
    """What the app serves: a headline per city, counted in the metrics."""

    def __init__(self, client: WeatherClient, metrics: Metrics | None = None) -> None:
        self.client = client
        self.metrics = metrics or Metrics()

    def report(self, city: str) -> str:
        line = headline(city, self.client)
        self.metrics.incr("forecast.served")
        return line
