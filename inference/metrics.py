"""Prometheus exposition of the same figures /health reports."""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class HealthCollector(Collector):
    def __init__(self, snapshot):
        self.snapshot = snapshot  # callable returning the /health dict

    def collect(self):
        health = self.snapshot()
        yield _gauge(
            "inference_up",
            "1 when the model is loaded and the server not draining",
            1 if health["state"] in ("ready", "degraded") else 0,
        )
        yield _gauge("inference_draining", "1 while draining", 1 if health["state"] == "draining" else 0)
        yield _gauge("inference_uptime_seconds", "Seconds since the process started", health["uptime_seconds"])
        yield _gauge("inference_in_flight_requests", "Requests being served", health["in_flight"])
        yield _gauge("inference_queued_requests", "Requests waiting for a generation slot", health["queued"])
        yield _gauge("inference_open_connections", "Open client connections", health.get("open_connections") or 0)
        requests = CounterMetricFamily("inference_requests", "Chat completion requests received")
        requests.add_metric([], health["totals"]["requests"])
        yield requests
        errors = CounterMetricFamily("inference_errors", "Failed requests by kind", labels=["kind"])
        for kind, count in health["totals"]["errors"].items():
            errors.add_metric([kind], count)
        yield errors
        rejected = CounterMetricFamily("inference_rejected", "Rejected requests by reason", labels=["reason"])
        for reason, count in health["totals"]["rejected"].items():
            rejected.add_metric([reason], count)
        yield rejected
        timing = health["timings"]
        for key, help_text in [
            ("latency_p50", "Request latency p50 over the window (s)"),
            ("latency_p95", "Request latency p95 over the window (s)"),
            ("latency_p99", "Request latency p99 over the window (s)"),
            ("ttft_p50", "Time to first token p50 (s)"),
            ("ttft_p95", "Time to first token p95 (s)"),
            ("tokens_per_second", "Decode tokens per second over the window"),
            ("requests_per_second", "Requests per second over the window"),
        ]:
            if timing.get(key) is not None:
                yield _gauge(f"inference_{key}", help_text, timing[key])
        for key, value in health["allocator"].items():
            if isinstance(value, (int, float)):
                yield _gauge(f"inference_torch_{key}", f"torch CUDA allocator {key}", value)
        decoder = health.get("decoder") or {}
        for key in ("slots", "slots_in_use", "waiting", "kv_cache_bytes"):
            value = decoder.get(key)
            if value is not None:
                yield _gauge(f"inference_decoder_{key}", f"batched decoder: {key.replace('_', ' ')}", value)
        if decoder.get("decoder"):
            # Which decoder and step kernels run (a fallback to eager kernels shows here), as labels.
            info = GaugeMetricFamily("inference_decoder_info", "How generation runs", labels=["decoder", "kernels"])
            info.add_metric([decoder["decoder"], decoder.get("kernels", "")], 1)
            yield info
        for key, value in health["process"].items():
            yield _gauge(f"inference_process_{key}", f"process {key}", value)


def _gauge(name: str, help_text: str, value) -> GaugeMetricFamily:
    metric = GaugeMetricFamily(name, help_text)
    metric.add_metric([], value)
    return metric
