"""Soak: the embedded console (as `make run`) under steady load for a long time, measuring whether
its memory, file descriptors, connections and database stay bounded.

    python bench/soak_bench.py [--minutes 30] [--instances 10] [--out soak.json]

Load: process instances answering the health contract (one writing log lines), sampled every
2 s; WebSocket clients on the dashboard and instance pages that come and go all the time, half of
them dropped abruptly (TCP reset, no close frame), as browsers on flaky networks do; one restart
through the API every minute. Raw samples are kept 10 minutes (TELEMETRY_RAW_RETENTION=600) so
that pruning is part of the run. Every 30 s: the console process's RSS, open fds and threads,
the server side's established connections, the database file and its sample rows.
"""

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.live_bench import serve, setup, shut_down, signed_in_with_stubs  # noqa: E402
from console.host.sockets import tcp_states  # noqa: E402


def proc_figures(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def db_figures(var: Path) -> dict:
    files = [var / "console.sqlite3", var / "console.sqlite3-wal"]
    size = sum(f.stat().st_size for f in files if f.exists())
    with sqlite3.connect(f"file:{var / 'console.sqlite3'}?mode=ro", uri=True, timeout=10) as db:
        samples = db.execute("select count(*) from telemetry_sample").fetchone()[0]
        operations = db.execute("select count(*) from operations_operation").fetchone()[0]
    return {"db_mib": round(size / 2**20, 2), "sample_rows": samples, "operations": operations}


async def churn(url: str, cookie: str, instances: int, stop: threading.Event, counts: dict) -> None:
    """Clients that connect, listen a few seconds and leave, cleanly or abruptly, until `stop`."""

    async def one():
        path = "/ws/dashboard/" if random.random() < 0.5 else f"/ws/instances/stub-{random.randrange(instances):02d}/"
        try:
            ws = await websockets.connect(
                url.replace("http", "ws") + path, additional_headers={"Cookie": cookie, "Origin": url}
            )
        except Exception:
            counts["failed"] += 1
            return
        counts["opened"] += 1
        end = time.monotonic() + random.uniform(1, 10)
        try:
            while time.monotonic() < end:
                try:
                    await asyncio.wait_for(ws.recv(), timeout=max(0.05, end - time.monotonic()))
                    counts["events"] += 1
                except TimeoutError:
                    break
        finally:
            if random.random() < 0.5:
                ws.transport.abort()  # no close frame: the server finds out from the socket
                counts["aborted"] += 1
            else:
                await ws.close()
                counts["closed"] += 1

    tasks = set()
    while not stop.is_set():
        for _ in range(5):
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(1)
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--out", default="soak.json")
    args = parser.parse_args()
    os.environ["TELEMETRY_SAMPLE_SECONDS"] = "2"
    var = Path(tempfile.mkdtemp(prefix="soak-"))
    env, port = setup(var, args.instances, 200)
    env["TELEMETRY_RAW_RETENTION"] = "600"
    url = f"http://127.0.0.1:{port}"
    console = serve(env, port, var)
    series, counts = [], {"opened": 0, "closed": 0, "aborted": 0, "failed": 0, "events": 0}
    restarts = {"requested": 0, "refused": 0}
    stop = threading.Event()
    try:
        client, cookie = signed_in_with_stubs(env, url, args.instances, "soak")
        clients = threading.Thread(target=lambda: asyncio.run(churn(url, cookie, args.instances, stop, counts)))
        clients.start()
        began = time.monotonic()
        next_restart = began + 60
        while time.monotonic() - began < args.minutes * 60:
            if time.monotonic() >= next_restart:
                next_restart += 60
                name = f"stub-{random.randrange(args.instances):02d}"
                response = client.post(
                    f"/api/instances/{name}/operations/",
                    json={"kind": "restart", "reason": "soak"},
                    headers={"X-CSRFToken": client.cookies.get("csrftoken", ""), "Referer": url + "/"},
                )
                restarts["requested" if response.status_code in (200, 201, 202) else "refused"] += 1
            point = {"minute": round((time.monotonic() - began) / 60, 2), **proc_figures(console.pid)}
            point["established"] = (tcp_states(console.pid, port) or {}).get("ESTABLISHED", 0)
            point.update(db_figures(var))
            series.append(point)
            print(json.dumps(point), flush=True)
            time.sleep(30)
        stop.set()
        clients.join(60)
        time.sleep(10)  # every client gone: what is left on the server side?
        after = {**proc_figures(console.pid), **db_figures(var)}
        after["established"] = (tcp_states(console.pid, port) or {}).get("ESTABLISHED", 0)
        first_half = [p["rss_mib"] for p in series if p["minute"] <= args.minutes / 2]
        second_half = [p["rss_mib"] for p in series if p["minute"] > args.minutes / 2]
        result = {
            "minutes": args.minutes,
            "instances": args.instances,
            "websocket_clients": counts,
            "restarts": restarts,
            "rss_mib": {
                "start": series[0]["rss_mib"],
                "max_first_half": max(first_half),
                "max_second_half": max(second_half or first_half),
                "end": series[-1]["rss_mib"],
            },
            "fds": {
                "start": series[0]["fds"],
                "max": max(p["fds"] for p in series),
                "after_clients_left": after["fds"],
            },
            "threads": {"start": series[0]["threads"], "max": max(p["threads"] for p in series)},
            "established_after_clients_left": after["established"],
            "db_mib": {
                "at_10_min": next((p["db_mib"] for p in series if p["minute"] >= 10), None),
                "end": after["db_mib"],
            },
            "sample_rows": {
                "at_10_min": next((p["sample_rows"] for p in series if p["minute"] >= 10), None),
                "end": after["sample_rows"],
            },
            "series": series,
        }
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=2))
    finally:
        stop.set()
        shut_down(env, console, args.instances, var)


if __name__ == "__main__":
    main()
