"""A minimal server answering only the inference contract's /health and /health/ready (404 for the
rest), for load on the console's sampling path without twenty model processes, and as the smallest
server a process instance may run. Optionally prints log lines at a rate.

    python bench/health_stub.py PORT [LINES_PER_SECOND] [START_SECONDS]

START_SECONDS: how long it takes to start (before it listens), like a model loading.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.time()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        body = {
            "state": "ready",
            "pid": os.getpid(),
            "uptime_seconds": time.time() - STARTED,
            "in_flight": 0,
            "timings": {"requests_per_second": 1.0, "latency_p50": 0.02, "latency_p95": 0.05, "ttft_p50": 0.01},
            "totals": {"requests": 1},
        }
        answers = {"/health": (200, body), "/health/ready": (200, {"ready": True})}
        status, answer = answers.get(self.path, (404, {"error": {"message": "not found"}}))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def chatter(rate: int) -> None:
    """Log lines at about `rate` per second, in batches every 50 ms."""
    n = 0
    while True:
        batch = max(1, rate // 20)
        sys.stdout.write("".join(f'{{"level": "info", "msg": "request", "n": {n + i}}}\n' for i in range(batch)))
        sys.stdout.flush()
        n += batch
        time.sleep(0.05)


if __name__ == "__main__":
    if len(sys.argv) > 3:
        time.sleep(float(sys.argv[3]))
    if len(sys.argv) > 2 and int(sys.argv[2]) > 0:
        threading.Thread(target=chatter, args=(int(sys.argv[2]),), daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
