"""A "model server" that answers on 127.0.0.1:PORT as badly as it can without being silent:
`body` sends its headers, then its body a byte a second for ever; `headers` sends even its headers
a byte a second; `huge` sends a 64 MiB /health as fast as it can."""

import socket
import sys
import threading
import time


def answer(conn: socket.socket, mode: str) -> None:
    try:
        conn.recv(65536)
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
