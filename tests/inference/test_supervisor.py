"""inference.supervisor: restarts of the model process in place, stops and crashes, on real processes."""

import os
import shutil
import signal
import time

import httpx

from tests.conftest import wait_http
from tests.inference.helpers import InFlight, chat, draining

SUPERVISOR = "inference.supervisor"


def _admin(server, path: str, token: str | None = None) -> httpx.Response:
    token = server.token if token is None else token
    return httpx.post(server.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _health(server) -> dict:
    return httpx.get(server.url + "/health", timeout=5).json()


def _wait_new_process(server, old_pid: int, timeout: float = 90, states: tuple = ("ready",)) -> dict:
    """/health of a process other than old_pid once it is in one of `states` (connections refused in
    between are expected)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = _health(server)
            if health["pid"] != old_pid and health["state"] in states:
                return health
        except httpx.HTTPError:
            pass
        assert server.proc.poll() is None, "the supervisor ended during the restart:\n" + server.log()[-3000:]
        time.sleep(0.1)
    raise TimeoutError("no new ready model process:\n" + server.log()[-3000:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_restart_drains_then_serves_from_a_fresh_process(start_server, smoke_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(smoke_model, model)
    server = start_server(module=SUPERVISOR, MODEL_PATH=str(model), DEBUG_FAULTS=1, DRAIN_TIMEOUT=20)
    first = _health(server)
    assert first["pid"] != server.proc.pid  # the model runs in the supervisor's child
    request = InFlight(server, 1500)
    answer = _admin(server, "/admin/restart")
    assert answer.status_code == 202, answer.text
    assert answer.json()["pid"] == first["pid"]
    ready = httpx.get(server.url + "/health/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["state"] == "draining"  # at once
    assert _admin(server, "/admin/restart").json()["error"]["code"] == "stopping"  # one restart at a time
    assert request.result().status_code == 200  # the in-flight request finished first

    second = _wait_new_process(server, first["pid"])
    assert not _alive(first["pid"])
    assert second["totals"]["requests"] == 0  # a fresh process: counters, caches, connections
    reply = httpx.post(server.url + "/v1/chat/completions", json=chat(), timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] is not None
    log = server.log()
    assert '"msg": "imports ready"' in log and '"msg": "model process restarting"' in log
    # The first process loaded its own tokenizer; the fresh one took the supervisor's.
    assert log.count('"msg": "tokenizer and image processor inherited from the supervisor"') == 1, log[-3000:]

    # A second restart works as the first did; the tokenizer's files changed meanwhile: the supervisor
    # loads them again before it forks, and the process takes those.
    tokenizer_config = model / "tokenizer_config.json"
    os.utime(tokenizer_config, ns=(tokenizer_config.stat().st_atime_ns, tokenizer_config.stat().st_mtime_ns + 10**9))
    assert _admin(server, "/admin/restart").status_code == 202
    third = _wait_new_process(server, second["pid"])
    assert third["pid"] not in (first["pid"], second["pid"])
    log = server.log()
    assert log.count('"msg": "tokenizer and image processor loaded"') == 2, log[-3000:]
    assert log.count('"msg": "tokenizer and image processor inherited from the supervisor"') == 2, log[-3000:]


def test_sigterm_stops_child_and_supervisor_with_code_zero(start_server):
    server = start_server(module=SUPERVISOR, DEBUG_FAULTS=1, DRAIN_TIMEOUT=20)
    child = _health(server)["pid"]
    request = InFlight(server, 1500)
    server.proc.send_signal(signal.SIGTERM)  # what `docker stop` sends the container's first process
    assert draining(server.url).json()["state"] == "draining"
    assert _admin(server, "/admin/restart").json()["error"]["code"] == "stopping"  # no restart while stopping
    assert request.result().status_code == 200
    assert server.proc.wait(30) == 0
    assert not _alive(child)


def test_a_crashed_model_process_ends_the_supervisor_with_its_code(start_server):
    server = start_server(module=SUPERVISOR)
    child = _health(server)["pid"]
    os.kill(child, signal.SIGKILL)  # as the kernel's OOM killer would
    assert server.proc.wait(30) == 128 + signal.SIGKILL  # not restarted quietly: the orchestrator sees it
    assert "the supervisor ends with it" in server.log()


def _pipes(pid: int) -> set[str]:
    """The pipes a process holds open, by their inode ("pipe:[N]")."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("pipe:"):
            found.add(target)
    return found


def test_a_model_process_keeps_none_of_the_supervisors_pipes(start_server):
    """The supervisor wakes on signals through a pipe (signal.set_wakeup_fd); a forked model process
    closes it with the supervisor's other pipes and clears the wakeup, or a signal to the child would
    write into that pipe or into whatever file later took its number."""
    server = start_server(module=SUPERVISOR)
    child = _health(server)["pid"]
    supervisor = _pipes(server.proc.pid)
    assert supervisor  # its wakeup pipe at least
    assert not supervisor & _pipes(child)


def test_restart_needs_the_token_and_the_supervisor(start_server):
    plain = start_server()
    refused = _admin(plain, "/admin/restart")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_supervised"
    assert httpx.get(plain.url + "/health/ready").status_code == 200  # still serving

    supervised = start_server(module=SUPERVISOR)
    wrong = _admin(supervised, "/admin/restart", token="wrong")
    assert wrong.status_code == 401
    assert httpx.get(supervised.url + "/health/ready").status_code == 200
    wait_http(supervised.url + "/health/live")


def test_preload_leaves_tritons_own_hash_done_for_the_processes_it_forks():
    """Every model process's first Triton kernel needs the hash of Triton's own files (0.3 s); the
    supervisor computes it once before forking, and a child forked after preload finds it done."""
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from inference import supervisor\n"
        "from triton.runtime.cache import triton_key\n"
        "assert triton_key.cache_info().currsize == 0\n"
        "supervisor.preload()\n"
        "import torch\n"
        "assert not torch.cuda.is_initialized()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if triton_key.cache_info().currsize == 1 else 3)\n"
        "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_model_process_forked_before_its_holder_ran_still_maps_the_held_weights(smoke_model, short_tmp):
    """The supervisor forks the holder, then at once the model process, which asks for the weights
    first thing. The holder's socket is bound before that fork: a holder that has not run yet (a busy
    host; here it sleeps a second first) keeps the asker waiting in its backlog, where an unbound path
    sent it to read the weights itself."""
    import subprocess
    import sys

    script = (
        "import socket, sys, time\n"
        "from inference import handover, holder, supervisor\n"
        "from inference.settings import Settings\n"
        "serve = holder.serve\n"
        "def late(*args, **kwargs):\n"
        "    time.sleep(1)\n"
        "    return serve(*args, **kwargs)\n"
        "holder.serve = late\n"
        "settings = Settings(model_path=sys.argv[1], device='cpu', hold_weights='on')\n"
        "listener = socket.socket()\n"
        "record = handover.Record(sys.argv[2] + '/state.json')\n"
        "chief = supervisor.Supervisor(settings, listener, record, sys.argv[2] + '/weights.sock')\n"
        "started = chief.start_holder(chief.holder_path)\n"
        "chief.holder = started\n"
        "try:\n"
        "    mapped = holder.Mapped(chief.holder_path, timeout=60)\n"
        "    state = mapped.result()\n"
        "    assert mapped.holder_pid == started.pid and state, mapped.holder_pid\n"
        "finally:\n"
        "    chief.stop_holder()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(smoke_model), str(short_tmp)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
