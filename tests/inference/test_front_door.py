"""A flood of large requests: admission refuses what the slots and queue cannot hold before reading
it, parsing runs on its own threads, and /health keeps answering the console's probes."""

import threading

import httpx

from tests.inference.helpers import chat

BIG = chat("word " * 800_000)  # about 4 MB of JSON: long to read, parse and tokenise


def test_a_flood_of_large_requests_leaves_health_answering(start_server):
    server = start_server(MAX_CONCURRENCY=1, MAX_QUEUE=2, PREPROCESS_WORKERS=1, MAX_PROMPT_TOKENS=600)
    statuses, probes, done = [], [], threading.Event()

    def flood():
        try:
            response = httpx.post(server.url + "/v1/chat/completions", json=BIG, timeout=120)
            statuses.append((response.status_code, response.json()["error"]["code"]))
        except httpx.HTTPError as exc:
            statuses.append((0, type(exc).__name__))

    def probe():
        while not done.is_set():
            try:  # what the console's sampler does, with its timeout
                probes.append(httpx.get(server.url + "/health", timeout=3).status_code)
            except httpx.HTTPError as exc:
                probes.append(type(exc).__name__)

    prober = threading.Thread(target=probe)
    prober.start()
    senders = [threading.Thread(target=flood) for _ in range(30)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(180)
    done.set()
    prober.join(10)

    assert len(statuses) == 30
    overloaded = sum(1 for status in statuses if status == (429, "overloaded"))
    assert overloaded >= 30 - 3 - 5, statuses  # beyond one slot and a queue of two, refused at the door
    assert all(code in ("overloaded", "context_length_exceeded") for _, code in statuses), statuses
    assert probes and all(p == 200 for p in probes), probes  # every probe answered
    health = httpx.get(server.url + "/health").json()
    assert health["totals"]["rejected"].get("overloaded", 0) == overloaded and health["state"] == "ready"
