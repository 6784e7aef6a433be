"""The server's HTTP contract, against a real server process with the smoke model."""

import json

import httpx

from tests.inference.helpers import chat, image_url


def test_health_endpoints_tell_the_truth(shared_server):
    url = shared_server.url
    assert httpx.get(url + "/health/live").json()["status"] == "alive"
    assert httpx.get(url + "/health/ready").status_code == 200
    health = httpx.get(url + "/health").json()
    assert health["state"] == "ready"
    assert health["device"] == "cpu"
    assert health["model"] == "smoke"
    assert health["pid"] == shared_server.proc.pid
    assert health["process"]["rss_bytes"] > 10_000_000
    assert health["process"]["open_fds"] > 0
    for key in ("latency_p50", "latency_p95", "latency_p99", "ttft_p50", "tokens_per_second", "requests_per_second"):
        assert key in health["timings"]
    decoder = health["decoder"]
    assert decoder["decoder"] == "batched" and decoder["slots"] >= 1
    assert 0 <= decoder["slots_in_use"] <= decoder["slots"] and decoder["kv_cache_bytes"] > 0
    assert set(health["load_phases"]) >= {"import", "weights", "warmup"}
    assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == "smoke"


def test_text_and_image_completions(shared_server):
    response = httpx.post(
        shared_server.url + "/v1/chat/completions", json=chat("Describe it.", [image_url()]), timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] >= 1
    # 336x336 at patch 14, merge 2: 144 image tokens in the prompt.
    assert body["usage"]["prompt_tokens"] > 144
    assert response.headers["x-request-id"]
    plain = httpx.post(shared_server.url + "/v1/chat/completions", json=chat("hello"), timeout=60).json()
    assert plain["usage"]["prompt_tokens"] < 40


def test_streaming_sends_chunks_then_done(shared_server):
    events = []
    with httpx.stream("POST", shared_server.url + "/v1/chat/completions", json=chat(stream=True), timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_metrics_expose_the_same_figures(shared_server):
    httpx.post(shared_server.url + "/v1/chat/completions", json=chat(), timeout=60)
    text = httpx.get(shared_server.url + "/metrics").text
    for name in (
        "inference_up 1.0",
        "inference_in_flight_requests",
        "inference_requests_total",
        "inference_latency_p95",
        "inference_process_rss_bytes",
        "inference_decoder_slots_in_use",
        "inference_decoder_kv_cache_bytes",
        'inference_decoder_info{decoder="batched",kernels="eager"} 1.0',  # a CPU server
    ):
        assert name in text


def test_latency_window_counts_requests(shared_server):
    before = httpx.get(shared_server.url + "/health").json()["timings"]["count"]
    for _ in range(3):
        httpx.post(shared_server.url + "/v1/chat/completions", json=chat(), timeout=60)
    after = httpx.get(shared_server.url + "/health").json()
    assert after["timings"]["count"] == before + 3
    assert after["timings"]["latency_p95"] >= after["timings"]["latency_p50"] > 0
