"""A server that is never idle: closed-loop clients, each sending its next streamed request as soon as
its last one ends, so that some request is always decoding. Prompts of a few lengths (client i takes
length i mod 3), admitted alone or in groups as they come: prompt shapes the warm-up did not record.

    python bench/steady_load_bench.py --model /tmp/glm-4.6v-flash-random --clients 16 --seconds 40 --out load.json

Per window of `--window` seconds: requests finished, chunks of streamed text a second (a token
each), time to first text (median and 99th percentile), the server's prefills and their mean time,
and its prompt graphs (recorded, replayed, recorded between steps) from /health.
"""

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.inference_bench import PROMPT  # noqa: E402
from bench.startup_bench import running_server  # noqa: E402

LENGTHS = (1, 3, 6)  # the prompt's text repeated: about 30, 60 and 110 tokens


def client_loop(base: str, repeat: int, tokens: int, delay: float, deadline: float, done: list) -> None:
    time.sleep(delay)
    body = {
        "messages": [{"role": "user", "content": " ".join([PROMPT] * repeat)}],
        "max_tokens": tokens,
        "stream": True,
    }
    with httpx.Client(timeout=600) as client:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            first, chunks = None, 0
            with client.stream("POST", base + "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if line.startswith("data: {") and '"content"' in line:
                        chunks += 1
                        first = first or time.perf_counter()
            ended = time.perf_counter()
            done.append({"began": began, "ended": ended, "first_text": (first or ended) - began, "chunks": chunks})


def decoder(base: str) -> dict:
    return httpx.get(base + "/health", timeout=30).json().get("decoder") or {}


def window(requests: list, before: dict, after: dict, seconds: float) -> dict:
    firsts = sorted(r["first_text"] for r in requests)
    prefills = after["prefills"] - before["prefills"]
    return {
        "requests": len(requests),
        "text_chunks_per_second": round(sum(r["chunks"] for r in requests) / seconds, 1),
        "first_text_ms_median": round(1000 * statistics.median(firsts), 1) if firsts else None,
        "first_text_ms_p99": round(1000 * firsts[min(len(firsts) - 1, int(0.99 * len(firsts)))], 1) if firsts else None,
        "prefills": prefills,
        "prefill_ms_mean": round(1000 * (after["prefill_seconds"] - before["prefill_seconds"]) / prefills, 2)
        if prefills
        else None,
        "prompt_graphs": after.get("prompt_graphs"),
        "prompt_graph_replays": after.get("prompt_graph_replays", 0) - before.get("prompt_graph_replays", 0),
        "recorded_busy": after.get("prompt_graphs_recorded_busy", 0) - before.get("prompt_graphs_recorded_busy", 0),
        "graph_record_s": round(after.get("graph_record_seconds", 0) - before.get("graph_record_seconds", 0), 3),
        "decoding_at_end": after.get("slots_in_use"),
    }


def measure(base: str, clients: int, seconds: float, tokens: int, every: float) -> dict:
    done: list = []
    start = time.perf_counter()
    deadline = start + seconds
    threads = [
        # Started apart and asking for different lengths, so that they do not finish in the same step
        # and leave the decoder idle until the next wave.
        threading.Thread(
            target=client_loop,
            args=(base, LENGTHS[i % len(LENGTHS)], tokens + 8 * (i % 5), 0.05 * i, deadline, done),
        )
        for i in range(clients)
    ]
    samples = [(start, decoder(base))]
    for thread in threads:
        thread.start()
    while time.perf_counter() < deadline:
        time.sleep(max(0.0, min(every, deadline - time.perf_counter())))
        samples.append((time.perf_counter(), decoder(base)))
    for thread in threads:
        thread.join()
    windows = []
    for (began, before), (ended, after) in itertools.pairwise(samples):
        finished = [r for r in done if began <= r["ended"] < ended]
        windows.append({"from_s": round(began - start, 1), **window(finished, before, after, ended - began)})
    return {"clients": clients, "seconds": seconds, "tokens": tokens, "windows": windows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--window", type=float, default=10)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=8379)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.window <= 0:
        parser.error("--clients, --seconds and --window must be positive")
    env = {"MAX_CONCURRENCY": str(args.clients), "MAX_QUEUE": "64"}
    with running_server(args.model, args.port, **env) as (base, _, _):
        result = measure(base, args.clients, args.seconds, args.tokens, args.window)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
