"""A "model server" that answers on 127.0.0.1:PORT as badly as it can without being silent:
`body` sends its headers, then its body a byte a second for ever; `headers` sends even its headers
a byte a second; `huge` sends a 64 MiB /health as fast as it can; `deep` answers every request with
JSON nested 100,000 deep, and a chat completion with a stream of chunks of every wrong shape around
one good one; `odd` answers /health with JSON of the wrong shapes everywhere (ODD), and other
requests likewise (ODD_PATHS)."""

import json
import socket
import sys
import threading
import time

DEEP = b"[" * 100_000
CHUNKS = [DEEP, b'{"choices": ["x"]}', b'{"choices": "abc"}', b'{"choices": [{"delta": ["x"]}]}', b"[1]", b"{"]
GOOD = b'{"choices": [{"delta": {"content": "ok"}}]}'
ODD = {
    "state": "ready",
    "pid": "12",
    "in_flight": "many",
    "uptime_seconds": [1],
    "timings": [1, 2],
    "allocator": {"allocated_bytes": "lots", "reserved_bytes": 1e30, "fragmentation": True},
    "process": {"rss_bytes": 2**70, "open_fds": 2**40},
    "totals": "x",
    "engine": {f"figure{i}": i for i in range(1000)} | {"kv_cache_usage": {"deep": [1]}},
    "supervisor": {
        "pid": 2**80,
        "standby": {"state": "ready", "load_seconds": "soon"},
        "handovers": [
            {
                "id": 1,
                "state": ["done"],
                "old_pid": -1,
                "began": "now",
                "why": {"x": 1},
                "phases": [
                    {"name": {"x": 1}, "seconds": 10**400, "pid": -1},
                    "not a phase",
                    {"name": "failed", "pid": True, "exit_code": "nine", "seconds": float("nan")},
                ],
            },
            {"id": 2, "state": "done", "old_pid": 1234, "began": 1e9, "phases": [{"name": "x", "seconds": 0.5}]},
        ],
    },
    "load_error": "e" * 10_000,
}


# Mode `odd`'s answers to other requests than /health.
ODD_PATHS = {
    b"GET /health/ready ": (503, {"state": "failed", "load_error": {"not": "a text"}}),
    b"GET /v1/models ": (
        200,
        {"data": [{"id": {"x": 1}}, "x", {"id": ""}, *({"id": f"model-{i}-" + "m" * 300} for i in range(1000))]},
    ),
    b"POST /admin/restart ": (202, {"pid": True}),
    b"POST /admin/handover ": (202, {"handover": True}),
}


def response(kind: bytes, body: bytes, status: int = 200) -> bytes:
    """A whole answer; the connection closes after it (a client reusing it would race the close)."""
    head = b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    return head % (status, kind, len(body)) + body


def odd(request: bytes) -> bytes:
    status, body = next((answer for start, answer in ODD_PATHS.items() if request.startswith(start)), (200, ODD))
    return response(b"application/json", json.dumps(body).encode(), status)


def deep(request: bytes) -> bytes:
    """The answer of mode `deep`: a chat completion streams every odd chunk, then a good one."""
    if request.startswith(b"POST /v1/chat/completions"):
        body = b"".join(b"data: " + chunk + b"\n\n" for chunk in [*CHUNKS, GOOD]) + b"data: [DONE]\n\n"
        return response(b"text/event-stream", body)
    return response(b"application/json", DEEP)


def read_request(conn: socket.socket) -> bytes:
    """The whole request, body included: closing with some of it unread would reset the connection,
    and the client might lose the answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def answer(conn: socket.socket, mode: str) -> None:
    try:
        request = read_request(conn)
        if mode == "deep":
            conn.sendall(deep(request))
            return
        if mode == "odd":
            conn.sendall(odd(request))
            return
        if mode == "huge":
            size = 64 * 2**20
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size)
            conn.sendall(b'{"state": "ready", "pad": "' + b"x" * (size - 30) + b'"}')
            return
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"
        if mode == "body":
            conn.sendall(head)
            head = b" " * 1_000_000
        for byte in head:
            conn.sendall(bytes([byte]))
            time.sleep(1)
    except OSError:
        pass
    finally:
        conn.close()


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=answer, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    main()
