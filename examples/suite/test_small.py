"""Small tests: no size marker, so they take the default size, small (no network at all)."""

from __future__ import annotations

import pytest

import weather
from conftest import STUB_PORT


def test_parse_reading():
    # Pure logic: passes in every mode.
    body = b'{"city": "Oslo", "temperature": 3.6}'
    assert weather.parse_reading(body) == weather.Reading("Oslo", 3.6)


def test_headline():
    # Forgot to pass a client: headline() builds one for the real API and looks up
    # api.weather.example. strict: the lookup raises NetworkViolationError (NG002) before
    # any query, and the test fails. warn: the lookup goes through, finds nothing, and
    # headline() falls back to the last known value.
    assert weather.headline("Oslo") == "Oslo: 4°C"


def test_headline_with_a_fake_client():
    # The fix for test_headline: inject a fake client. Passes in every mode.
    class FakeClient:
        def current(self, city):
            return weather.Reading(city, 21.4)

    assert weather.headline("Oslo", FakeClient()) == "Oslo: 21°C"


def test_describe_never_fails():
    # describe() connects to the mirror 192.0.2.10:80 and swallows every error. Its
    # assertion holds, but in strict mode netguard recorded the blocked connect and fails
    # the test all the same.
    assert weather.describe("Oslo") == "Oslo: no data"


def test_client_against_a_local_server(weather_server):
    # A real HTTP round trip to a server on loopback: a medium test that forgot its
    # marker. strict: the connect to 127.0.0.1 fails it (small means no loopback either);
    # the message suggests @pytest.mark.medium. Compare test_medium.py.
    host, port = weather_server
    client = weather.WeatherClient(host, port)
    assert client.current("Oslo") == weather.Reading("Oslo", 21.4)


@pytest.mark.netguard(allow=[f"127.0.0.1:{STUB_PORT}"])
def test_stub_on_a_fixed_port(stub_server):
    # Still a small test, plus one rule: 127.0.0.1 on the stub's port, and nothing else.
    host, port = stub_server
    client = weather.WeatherClient(host, port)
    assert client.current("Lisbon") == weather.Reading("Lisbon", 21.4)
