"""Probe an instance's /health JSON and read the figures the console charts."""

import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Probe:
    ok: bool
    ms: float | None
    health: dict = field(default_factory=dict)
    error: str = ""


def probe(base_url: str, timeout: float = 3.0, client: httpx.Client | None = None) -> Probe:
    url = base_url.rstrip("/") + "/health"
    began = time.perf_counter()
    try:
        if client is not None:
            response = client.get(url, timeout=timeout)
        else:
            response = httpx.get(url, timeout=timeout)
        ms = (time.perf_counter() - began) * 1000
        body = response.json()
    except httpx.TimeoutException:
        return Probe(ok=False, ms=None, error=f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return Probe(ok=False, ms=None, error=f"unreachable: {exc}")
    except ValueError:
        return Probe(ok=False, ms=(time.perf_counter() - began) * 1000, error="/health did not return JSON")
    if not isinstance(body, dict):
        return Probe(ok=False, ms=ms, error="/health did not return a JSON object")
    # A 503 while loading or draining still carries the figures.
    return Probe(ok=response.status_code < 500 or "state" in body, ms=ms, health=body)


def _ms(seconds) -> float | None:
    return round(seconds * 1000, 2) if isinstance(seconds, int | float) else None


def figures(health: dict) -> dict:
    """Chart figures from a /health body (the inference server's contract; other servers give fewer)."""
    timings = health.get("timings") or {}
    allocator = health.get("allocator") or {}
    process = health.get("process") or {}
    return {
        "in_flight": health.get("in_flight"),
        "rps": timings.get("requests_per_second"),
        "p50_ms": _ms(timings.get("latency_p50")),
        "p95_ms": _ms(timings.get("latency_p95")),
        "ttft_ms": _ms(timings.get("ttft_p50")),
        "allocated": allocator.get("allocated_bytes"),
        "reserved": allocator.get("reserved_bytes"),
        "fragmentation": allocator.get("fragmentation"),
        "rss": process.get("rss_bytes"),
        "fds": process.get("open_fds"),
    }
