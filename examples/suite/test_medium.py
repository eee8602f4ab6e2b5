"""Medium tests: loopback and AF_UNIX only. One marker for the whole module."""

from __future__ import annotations

import pytest

import weather

pytestmark = pytest.mark.medium


def test_client_against_a_local_server(weather_server):
    # The same test as in test_small.py, now sized medium: loopback is allowed.
    host, port = weather_server
    client = weather.WeatherClient(host, port)
    assert client.current("Oslo") == weather.Reading("Oslo", 21.4)


def test_service_with_fake_metrics(weather_server, fake_metrics):
    service = weather.ForecastService(weather.WeatherClient(*weather_server), fake_metrics)
    assert service.report("Oslo") == "Oslo: 21°C"
    assert fake_metrics.counts == {"forecast.served": 1}


def test_service_with_default_metrics(weather_server):
    # Forgot to inject metrics: the service sends a UDP datagram to the production relay
    # 198.51.100.7:8125, and the metrics client ignores errors. strict: blocked, swallowed,
    # and the test fails anyway. With --netguard-allowlist allowlist.toml (whose entry
    # "metrics-relay" allows 198.51.100.0/24:8125 for medium tests and larger), it passes.
    service = weather.ForecastService(weather.WeatherClient(*weather_server))
    try:
        assert service.report("Oslo") == "Oslo: 21°C"
    finally:
        service.metrics.close()
