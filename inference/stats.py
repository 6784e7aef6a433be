"""What the server knows about itself: counters and a sliding window of request timings."""

import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import psutil

WINDOW_MAX_ENTRIES = 10_000  # bounded whatever the traffic


@dataclass
class Finished:
    at: float
    latency: float
    ttft: float | None
    tokens: int
    decode_seconds: float


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Stats:
    def __init__(self, window_seconds: float):
        self.window_seconds = window_seconds
        self.started = time.time()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.queued = 0
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.window: deque[Finished] = deque(maxlen=WINDOW_MAX_ENTRIES)
        self.last_oom: float = 0.0
        self.process = psutil.Process(os.getpid())

    def record(self, item: Finished) -> None:
        with self.lock:
            self.window.append(item)

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            if kind == "out_of_memory":
                self.last_oom = time.time()

    def reject(self, kind: str) -> None:
        with self.lock:
            self.rejected[kind] += 1

    def _recent(self) -> list[Finished]:
        cutoff = time.time() - self.window_seconds
        with self.lock:
            while self.window and self.window[0].at < cutoff:
                self.window.popleft()
            return list(self.window)

    def timings(self) -> dict:
        recent = self._recent()
        latencies = [f.latency for f in recent]
        ttfts = [f.ttft for f in recent if f.ttft is not None]
        tokens = sum(f.tokens for f in recent)
        decode = sum(f.decode_seconds for f in recent)
        span = min(self.window_seconds, max(1e-9, time.time() - self.started))
        return {
            "window_seconds": self.window_seconds,
            "count": len(recent),
            "requests_per_second": round(len(recent) / span, 3),
            "latency_p50": percentile(latencies, 50),
            "latency_p95": percentile(latencies, 95),
            "latency_p99": percentile(latencies, 99),
            "ttft_p50": percentile(ttfts, 50),
            "ttft_p95": percentile(ttfts, 95),
            "tokens_per_second": round(tokens / decode, 2) if decode > 0 else None,
        }

    def process_stats(self) -> dict:
        try:
            return {"rss_bytes": self.process.memory_info().rss, "open_fds": self.process.num_fds()}
        except psutil.Error:
            return {}
