"""What a client sees of a streamed answer, against a whole one: time to the first content chunk,
tokens/s, and the aggregate of concurrent streams, over HTTP.

    BENCH_SERVER_LOG=server.log python bench/stream_bench.py --model /tmp/glm-4.6v-flash-random --out stream.json

The same prompt (text only, about 30 tokens; with `--image` a 336x336 picture first) throughout.
Figures: the median of `--repeat` requests of one token answered whole (what "time to first token"
measured before), the median time to the first byte and to the first chunk with text of a
`--tokens`-token streamed answer, the server's own time to its first token for those (its request
log), and tokens/s of `--streams` concurrent streamed and whole answers (`--bursts` of each, one
after another: the server records the graphs of prompt shapes it first meets while idle, so later
bursts find them).
"""

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.inference_bench import PROMPT, image_url  # noqa: E402
from bench.startup_bench import running_server  # noqa: E402

CONTENT: list | str = PROMPT  # --image: a 336x336 picture before the text, as inference_bench sends


def body(tokens: int, stream: bool) -> dict:
    return {"messages": [{"role": "user", "content": CONTENT}], "max_tokens": tokens, "stream": stream}


def whole(client: httpx.Client, base: str, tokens: int) -> tuple[float, int]:
    began = time.perf_counter()
    answer = client.post(base + "/v1/chat/completions", json=body(tokens, False)).json()
    return time.perf_counter() - began, answer["usage"]["completion_tokens"]


def streamed(client: httpx.Client, base: str, tokens: int) -> dict:
    began = time.perf_counter()
    first_byte = first_text = None
    chunks = 0
    with client.stream("POST", base + "/v1/chat/completions", json=body(tokens, True)) as response:
        for line in response.iter_lines():
            now = time.perf_counter()
            first_byte = first_byte or now
            if line.startswith("data: {") and '"content"' in line:
                chunks += 1
                first_text = first_text or now
    ended = time.perf_counter()
    return {
        "first_byte": first_byte - began,
        "first_text": (first_text or ended) - began,
        "total": ended - began,
        "chunks": chunks,
    }


def server_ttft(count: int) -> float | None:
    """The server's time to first token for the first `count` streamed requests (its request log)."""
    path = os.environ.get("BENCH_SERVER_LOG")
    if not path:
        return None
    values = []
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("{") and '"msg": "request"' in line and '"stream": true' in line:
            values.append(json.loads(line)["ttft_ms"])
    return statistics.median(values[:count]) if values else None


def where_time_went(before: dict, health: dict, wall: float) -> dict:
    """Where the batched decoder's wall time went meanwhile (its /health counters), in seconds: decoding
    steps (to the chosen tokens on the host), handing their tokens to requests, prefills (between
    steps, the prompts admitted together in one pass), and the rest (waiting for requests, the
    interpreter); with the steps' count and mean."""
    after = health.get("decoder") or {}
    steps = after.get("steps", 0) - before.get("steps", 0)
    if steps <= 0:
        return {}
    spent = {key: after[f"{key}_seconds"] - before[f"{key}_seconds"] for key in ("step", "emit", "prefill")}
    return {
        "steps": steps,
        "queued_ahead": after.get("steps_queued_ahead", 0) - before.get("steps_queued_ahead", 0),
        "step_ms_mean": round(1000 * spent["step"] / steps, 3),
        "prefills": after["prefills"] - before["prefills"],
        "prompt_graphs_recorded": after.get("prompt_graphs", 0) - before.get("prompt_graphs", 0),
        "graph_record_s": round(after.get("graph_record_seconds", 0) - before.get("graph_record_seconds", 0), 3),
        **{f"{key}_s": round(value, 3) for key, value in spent.items()},
        "rest_s": round(wall - sum(spent.values()), 3),
    }


def burst(client: httpx.Client, base: str, kind: str, tokens: int, streams: int) -> tuple[float, dict]:
    """`streams` concurrent answers of `tokens` tokens, streamed or whole: tokens/s, and where the
    decoder's time went meanwhile."""
    decoder = client.get(base + "/health").json().get("decoder") or {}
    # Each stream's client made and connected before the clock starts: making 16 inside it took
    # about 0.35 s of the bench's own time (TLS contexts, thread start), not the server's.
    clients = [httpx.Client(timeout=600) for _ in range(streams)]
    for each in clients:
        each.get(base + "/health/live")
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda _: None, range(streams)))  # the pool's threads started
        began = time.perf_counter()
        if kind == "streamed":
            done = list(pool.map(lambda each: streamed(each, base, tokens), clients))
            produced = tokens * len(done)  # random weights: an end-of-text id is one in ~50,000
        else:
            done = list(pool.map(lambda each: whole(each, base, tokens), clients))
            produced = sum(n for _, n in done)
        wall = time.perf_counter() - began
    for each in clients:
        each.close()
    return round(produced / wall, 1), where_time_went(decoder, client.get(base + "/health").json(), wall)


def measure(base: str, tokens: int, streams: int, repeat: int, bursts: int = 1) -> dict:
    client = httpx.Client(timeout=600)
    whole(client, base, 4)  # warm-up
    one_token = statistics.median(whole(client, base, 1)[0] for _ in range(repeat))
    runs = [streamed(client, base, tokens) for _ in range(repeat)]
    result = {
        "whole_1_token_ms": round(one_token * 1000, 1),
        "streamed_first_byte_ms": round(statistics.median(r["first_byte"] for r in runs) * 1000, 1),
        "streamed_first_text_ms": round(statistics.median(r["first_text"] for r in runs) * 1000, 1),
        "streamed_chunks_median": statistics.median(r["chunks"] for r in runs),
        "streamed_total_s": round(statistics.median(r["total"] for r in runs), 3),
        "server_ttft_ms_median": server_ttft(repeat),
    }
    for kind in ("streamed", "whole"):
        rates, steps = [], []
        for _ in range(bursts):
            rate, spent = burst(client, base, kind, tokens, streams)
            rates.append(rate)
            steps.append(spent)
        result[f"{kind}_{streams}_concurrent_tokens_per_second"] = rates[-1]
        result[f"{kind}_{streams}_concurrent_steps"] = steps[-1]
        if bursts > 1:
            result[f"{kind}_{streams}_concurrent_bursts"] = [
                {"tokens_per_second": rate, **spent} for rate, spent in zip(rates, steps, strict=True)
            ]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--port", type=int, default=8379)
    parser.add_argument("--bursts", type=int, default=1, help="concurrent bursts of each kind, one after another")
    parser.add_argument("--out", default="")
    parser.add_argument("--image", action="store_true", help="a 336x336 image before the text")
    args = parser.parse_args()
    if args.bursts < 1:
        parser.error("--bursts must be at least 1")
    if args.image:
        global CONTENT
        CONTENT = [{"type": "image_url", "image_url": {"url": image_url()}}, {"type": "text", "text": PROMPT}]
    env = {"MAX_CONCURRENCY": str(args.streams), "MAX_QUEUE": "64"}
    with running_server(args.model, args.port, **env) as (base, _, _):
        result = {
            "tokens": args.tokens,
            "streams": args.streams,
            **measure(base, args.tokens, args.streams, args.repeat, args.bursts),
        }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
