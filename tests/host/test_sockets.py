"""Connection states read from /proc for real sockets of this process's namespace."""

import os
import socket
import subprocess
import time

from console.host.sockets import TcpTables, parse, tcp_states


def test_parse_counts_only_the_given_local_port():
    table = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 0 0
   1: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 0 0
   2: 0100007F:1F90 0100007F:D2A6 08 00000000:00000000 00:00000000 00000000     0        0 3 1 0 0 0
   3: 0100007F:D2A4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 0 0
   garbage line
"""
    counts = parse(table, 8080)
    assert counts == {"LISTEN": 1, "ESTABLISHED": 1, "CLOSE_WAIT": 1}  # the client side (row 3) is not ours


def _port_free_on_every_address() -> socket.socket:
    """A port no socket of this namespace uses, held by a socket bound to it on every address, which never
    listens (nothing reaches it). The table is counted by port, and a port free on 127.0.0.1 alone may
    be in use by another process's connection on another address (counted once in CI)."""
    held = socket.socket()
    held.bind(("0.0.0.0", 0))  # the wildcard conflicts with a socket on any address: such ports are skipped
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # lets the listener share it
    return held


def test_established_close_wait_and_time_wait_on_a_real_listener():
    held = _port_free_on_every_address()
    port = held.getsockname()[1]
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    clients, accepted = [], []
    try:
        for _ in range(5):
            client = socket.create_connection(("127.0.0.1", port))
            clients.append(client)
            accepted.append(server.accept()[0])
        # A client that goes away while the server keeps its end open: CLOSE_WAIT, the leak of the checklist.
        for client in clients[:2]:
            client.close()
        # The server closes first: its side waits in TIME_WAIT... after the peer's FIN.
        accepted[4].close()
        clients[4].close()
        time.sleep(0.2)
        states = tcp_states(os.getpid(), port)
        assert states["LISTEN"] == 1
        assert states["CLOSE_WAIT"] == 2
        assert states["ESTABLISHED"] == 2
        assert states["TIME_WAIT"] == 1
    finally:
        for sock in clients + accepted + [server, held]:
            sock.close()


def test_a_process_that_does_not_exist_reads_as_unknown():
    assert tcp_states(2**22 + 12345, 80) is None


def test_a_round_reads_each_namespace_once_and_answers_every_port_from_it():
    """Two real listeners in this process's namespace, and a child process in the same one: the round
    reads the table once (a second pid of that namespace is answered from it) and agrees with a
    direct read for each port."""
    servers = []
    try:
        for _ in range(2):
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen(4)
            servers.append(server)
        ports = [s.getsockname()[1] for s in servers]
        tables = TcpTables()
        for port in ports:
            assert tables.states(os.getpid(), port) == tcp_states(os.getpid(), port) == {"LISTEN": 1}
        assert len(tables._tables) == 1  # one namespace, read once
        child = subprocess.Popen(["sleep", "5"])
        try:
            assert tables.states(child.pid, ports[0]) == {"LISTEN": 1}
            assert len(tables._tables) == 1  # the child's namespace is this one: no second read
        finally:
            child.kill()
            child.wait()
        assert tables.states(2**22 + 12345, 80) is None
    finally:
        for server in servers:
            server.close()
