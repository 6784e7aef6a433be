"""HTTP glue for the model server: OpenAI-compatible chat, health, metrics, admin.

    MODEL_PATH=/models/glm-4.6v-flash python -m inference.server

The engine (engine.py) knows nothing of HTTP; this module knows nothing of torch.
"""

import asyncio
import hmac
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest

from inference import handover, holder, logs
from inference.engine import Engine, dtype_for
from inference.limits import ApiError, RateLimiter
from inference.metrics import HealthCollector
from inference.settings import Settings
from inference.stats import Stats
from inference.supervisor import RESTART_EXIT, SUPERVISOR_ENV

log = logging.getLogger("inference.server")


class Server:
    """Everything the endpoints share: engine, counters, state."""

    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        self.engine = engine or Engine(
            settings.model_path,
            settings.device,
            settings.dtype,
            settings.kv_cache,
            decoder=settings.decoder,
            slots=settings.max_concurrency,
            context=settings.context,
            cuda_graphs=settings.cuda_graphs,
            step_kernels=settings.step_kernels,
            weight_loader=settings.weight_loader,
            hold_weights=settings.hold_weights,
            weights_socket=os.environ.get(holder.SOCKET_ENV, ""),
        )
        self.stats = Stats(settings.stats_window_seconds)
        self.loaded = False
        self.load_error = ""
        self.draining = False
        # A handover's new process serves: answer what still comes on open connections, each answer
        # saying Connection: close, and take no new ones.
        self.retiring = False
        self.slots = asyncio.Semaphore(settings.max_concurrency)
        # Requests admitted and not yet queued for a slot: their bodies being read and prepared.
        self.preparing = 0
        # Parsing, image decoding and tokenising run here, so a flood of large requests never holds
        # up the default pool that /health and /metrics answer from.
        self.preprocessing = ThreadPoolExecutor(max(1, settings.preprocess_workers), thread_name_prefix="preprocess")
        self.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
        self.fault_delay = 0.0
        self.uvicorn: uvicorn.Server | None = None
        self.on_loaded = None  # called once the model is loaded and warmed up

    def load(self) -> None:
        try:
            self.engine.load()
            if self.settings.warmup:
                self.engine.warmup()
            self.loaded = True
            if self.on_loaded is not None:
                self.on_loaded()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load")

    @property
    def state(self) -> str:
        if self.load_error:
            return "failed"
        if not self.loaded:
            return "loading"
        if self.draining:
            return "draining"
        if time.time() - self.stats.last_oom < 60 or self.fault_delay:
            return "degraded"
        return "ready"

    def health(self) -> dict:
        stats = self.stats
        connections = None
        if self.uvicorn is not None:
            connections = len(self.uvicorn.server_state.connections)
        return {
            "state": self.state,
            "model": self.settings.model_name or self.engine.name,
            "device": self.engine.device,
            "dtype": self.engine.dtype,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - stats.started, 3),
            "load_seconds": round(self.engine.load_seconds, 3),
            "load_phases": self.engine.load_phases,
            # Where the weights came from: "holder" (mapped from the weight holder, with its pid and
            # what it holds) or "files".
            "weights": self.engine.weights,
            "load_error": self.load_error or None,
            "in_flight": stats.in_flight,
            "queued": stats.queued,
            "open_connections": connections,
            "totals": {"requests": stats.requests, "errors": dict(stats.errors), "rejected": dict(stats.rejected)},
            "timings": stats.timings(),
            "allocator": self.engine.allocator_stats() if self.loaded else {},
            "decoder": self.engine.decoder_stats() if self.loaded else {},
            "process": stats.process_stats(),
            # Under inference.supervisor: which process serves, and the last handovers' phases.
            "supervisor": handover.read(),
        }

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            logs.event(log, "draining", in_flight=self.stats.in_flight)

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.stats.in_flight + self.stats.queued > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.stats.in_flight + self.stats.queued == 0


def create_app(settings: Settings | None = None, server: Server | None = None) -> FastAPI:
    settings = settings or Settings()
    server = server or Server(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not server.loaded:  # a handover's new process loaded before it took the socket
            threading.Thread(target=server.load, name="load-model", daemon=True).start()
        yield

    app = FastAPI(title="GLM-4.6V inference server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server
    app.add_middleware(CloseWhenRetiring, server=server)
    registry = CollectorRegistry()
    registry.register(HealthCollector(server.health))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    def require_admin(request: Request) -> None:
        token = settings.admin_token
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not token:
            raise ApiError(403, "admin endpoints are disabled: set ADMIN_TOKEN", "admin_disabled")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "missing or wrong bearer token", "unauthorized")

    @app.get("/health/live")
    async def live():
        return {"status": "alive", "pid": os.getpid()}

    @app.get("/health/ready")
    async def ready():
        state = server.state
        ok = state in ("ready", "degraded")
        said = {"ready": ok, "state": state}
        if state == "failed":  # why, for whoever waits for ready: waiting longer will not help
            said["load_error"] = server.load_error[:500]
        return JSONResponse(said, status_code=200 if ok else 503)

    @app.get("/health")
    async def health():
        return await asyncio.to_thread(server.health)

    @app.get("/metrics")
    async def metrics():
        data = await asyncio.to_thread(generate_latest, registry)
        return PlainTextResponse(data, media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        name = settings.model_name or server.engine.name
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "local"}]}

    @app.post("/admin/drain")
    async def drain(request: Request):
        require_admin(request)
        server.begin_drain()
        return {"state": server.state, "in_flight": server.stats.in_flight}

    @app.post("/admin/restart")
    async def restart(request: Request):
        require_admin(request)
        if not os.environ.get(SUPERVISOR_ENV):
            raise ApiError(
                409,
                "this server does not run under inference.supervisor: restart its process or container",
                "not_supervised",
            )
        if server.uvicorn is None or not server.uvicorn.exit_after_drain(restart=True):
            raise ApiError(409, "the server is already stopping", "stopping")
        return JSONResponse(
            {"restarting": True, "pid": os.getpid(), "in_flight": server.stats.in_flight}, status_code=202
        )

    @app.post("/admin/handover")
    async def handover_(request: Request):
        require_admin(request)
        supervisor = os.environ.get(SUPERVISOR_ENV)
        if not supervisor:
            raise ApiError(
                409,
                "this server does not run under inference.supervisor: restart its process or container",
                "not_supervised",
            )
        if server.draining or server.retiring:
            raise ApiError(409, "the server is already stopping", "stopping")
        record = handover.read() or {}
        handovers = record.get("handovers") or []
        if handovers and handovers[-1].get("state") == "running":
            raise ApiError(409, "a handover is already under way", "handover_running")
        after = handovers[-1]["id"] if handovers else 0
        asked = request.query_params.get("reload_weights", "false").lower()
        if asked not in ("true", "false", "1", "0"):
            raise ApiError(400, "reload_weights must be true or false", "invalid_reload_weights")
        reload = asked in ("true", "1")
        if reload:
            handover.ask_reload()  # a new weight holder reads them, even if the files did not change
        os.kill(int(supervisor), signal.SIGUSR1)
        logs.event(log, "handover asked for", reload_weights=reload)
        # Answered once the supervisor has begun it, so a second request is refused and the caller
        # knows which handover to follow in /health.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            begun = ((handover.read() or {}).get("handovers") or [{}])[-1]
            if begun.get("id", 0) > after:
                return JSONResponse({"handover": begun["id"], "pid": os.getpid(), "after": after}, status_code=202)
            await asyncio.sleep(0.02)
        raise ApiError(503, "the supervisor did not begin the handover", "supervisor_silent")

    @app.post("/admin/soft-reset")
    async def soft_reset(request: Request):
        require_admin(request)
        if not server.loaded:
            raise ApiError(503, "the model is not loaded", "not_ready")
        result = await asyncio.to_thread(server.engine.soft_reset)
        logs.event(log, "soft reset", **result)
        return result

    if settings.debug_faults:

        @app.post("/debug/faults")
        async def faults(request: Request):
            body = await request.json()
            server.fault_delay = float(body.get("delay_ms", 0)) / 1000
            return {"delay_ms": server.fault_delay * 1000}

    from inference.chat import register_chat

    register_chat(app, server)
    return app


class CloseWhenRetiring:
    """Every answer of a retiring process says Connection: close, so its clients reconnect (to the
    new process) instead of reusing a connection it is about to close."""

    def __init__(self, app, server: Server):
        self.app = app
        self.server = server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message):
            if message["type"] == "http.response.start" and self.server.retiring:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        return await self.app(scope, receive, sending)


class DrainingServer(uvicorn.Server):
    """SIGTERM: readiness off at once, in-flight requests finish (bounded), then exit 0.
    /admin/restart under the supervisor (or its SIGHUP): the same, then exit RESTART_EXIT for a fresh
    process. SIGUSR2 from the supervisor, once a handover's new process serves: stop accepting at
    once, finish the requests in flight, exit 0."""

    def __init__(self, config: uvicorn.Config, server: Server, ready_fd: int | None = None):
        super().__init__(config)
        self.inference = server
        self.restart = False
        self.ready_fd = ready_fd
        self._ready_lock = threading.Lock()
        server.on_loaded = self.say_ready
        self._drain_thread: threading.Thread | None = None

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR2, self.retire)
        loop.add_signal_handler(signal.SIGHUP, self.exit_after_drain, True)
        if self.inference.loaded:  # a handover's new process (else once its load is done)
            self.say_ready()

    def say_ready(self) -> None:
        """Tell the supervisor, once both serving and loaded: a handover's old process retires on this
        word, and a standby may be loaded beside this one."""
        with self._ready_lock:
            if self.ready_fd is None or not self.started:
                return
            os.write(self.ready_fd, f"ready {self.inference.engine.load_seconds:.3f}\n".encode())
            os.close(self.ready_fd)
            self.ready_fd = None

    def retire(self) -> None:
        """Stop accepting (the socket's queue is the new process's now) and exit once every open
        connection has closed. A connection is never closed under a client that may be sending on it:
        each answer from now on says Connection: close, and uvicorn closes idle ones after its
        keep-alive timeout as at any time. Bounded by the drain timeout."""
        if self.inference.retiring or self._drain_thread is not None:
            return
        self.inference.retiring = True
        logs.event(log, "retiring: the new process serves", in_flight=self.inference.stats.in_flight)
        for listening in self.servers:
            listening.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.inference.settings.drain_timeout

        def check() -> None:
            if not self.server_state.connections or loop.time() > deadline:
                logs.event(log, "retired", open_connections=len(self.server_state.connections))
                self.should_exit = True
            else:
                loop.call_later(0.1, check)

        loop.call_later(0.1, check)

    def handle_exit(self, sig, frame) -> None:
        if sig != signal.SIGTERM:
            return super().handle_exit(sig, frame)  # Ctrl-C: uvicorn's own shutdown
        # Not recorded as a captured signal, so uvicorn does not re-raise it: exit code 0.
        self.restart = False  # a stop asked for during a restart's drain wins
        self.exit_after_drain(restart=False)

    def exit_after_drain(self, restart: bool) -> bool:
        """Readiness off now, exit once drained; False if already on its way out (a second
        SIGTERM does not cut the drain short)."""
        if self._drain_thread is not None:
            return False
        self.restart = restart
        self.inference.begin_drain()

        def finish() -> None:
            drained = self.inference.wait_drained(self.inference.settings.drain_timeout)
            logs.event(
                log,
                "exiting after drain",
                drained=drained,
                in_flight=self.inference.stats.in_flight,
                restart=self.restart,
            )
            self.should_exit = True

        self._drain_thread = threading.Thread(target=finish, name="drain", daemon=True)
        self._drain_thread.start()
        return True


def load_for_handover(server: Server, handover_fd: int, standby: bool = False) -> None:
    """A handover's new process: load and warm up before taking the socket; exit if it cannot. A
    `standby` stays beside the serving process for good, not for seconds: it leaves that one
    HANDOVER_RESERVE_BYTES free for its own peaks (a long prompt's prefill) and counts its own too."""
    import torch

    settings = server.settings
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    held = bool(os.environ.get(holder.SOCKET_ENV)) and holder.wanted(settings.hold_weights, device)
    dtype_bytes = getattr(torch, dtype_for(device, settings.dtype)).itemsize
    batched = settings.decoder == "batched"
    wanted = settings.max_concurrency

    def check_room() -> None:
        free, where = handover.free_bytes(device, settings.handover_max_bytes)
        slots, why = handover.fit_slots(
            free,
            where,
            0 if held else handover.weights_bytes(settings.model_path),
            settings.handover_reserve_bytes * (2 if standby else 1),
            handover.kv_slot_bytes(settings.model_path, settings.context, dtype_bytes) if batched else 0,
            wanted,
        )
        if not slots:
            logs.event(log, "no room for a handover", logging.WARNING, why=why)
            os.write(handover_fd, f"no-room {why}\n".encode())
            raise SystemExit(handover.NO_ROOM_EXIT)
        if slots < wanted:
            logs.event(log, "a smaller KV cache for the handover", logging.WARNING, slots=slots, wanted=wanted, why=why)
            os.write(handover_fd, f"kv-slots {slots} {wanted}\n".encode())
            server.engine.slots = slots

    if held:
        # Mapped weights take no memory: the room is checked once the model is built, before its KV
        # cache, so that CUDA starts on the mapping thread while the model is built (reading the free
        # memory first started it alone: 0.2 s on an H200). The process's context is counted then too.
        server.engine.before_kv_cache = check_room
    else:
        check_room()  # before reading weights that may not fit
    logs.event(log, "loading beside the serving process", pid=os.getpid(), weights_held=held)
    server.engine.on_mapped = lambda seconds: os.write(handover_fd, f"mapped {seconds:.3f}\n".encode())
    server.load()
    if not server.loaded:
        raise SystemExit(1)
    if server.engine.slots < wanted:  # check_room gave it fewer
        # Grown between steps once the old process is gone and its memory free again.
        server.engine.decoding.scheduler.grow_to(
            wanted, lambda need: handover.free_bytes(device)[0] >= need + handover.GROW_MARGIN_BYTES
        )


def wait_for_turn(server: Server, handover_fd: int, standby_fd: int) -> None:
    """A standby: loaded and warmed up, it says so and waits, serving nobody, until the supervisor
    hands it the next handover (or ends: then it exits, never to serve)."""
    logs.event(log, "standing by", pid=os.getpid(), load_seconds=round(server.engine.load_seconds, 2))
    os.write(handover_fd, f"standby {server.engine.load_seconds:.3f}\n".encode())
    word = os.read(standby_fd, 16)
    os.close(standby_fd)
    if not word:
        logs.event(log, "the supervisor is gone; the standby exits")
        raise SystemExit(0)
    logs.event(log, "the standby takes over")


def main(listener: socket.socket | None = None) -> None:
    """Serve on HOST:PORT, or on the supervisor's listening socket."""
    settings = Settings()
    logs.setup(settings)
    if not settings.model_path:
        raise SystemExit("MODEL_PATH is not set: point it at a GLM-4V checkpoint directory")
    server = Server(settings)
    handover_fd = os.environ.get(handover.HANDOVER_FD_ENV)
    ready_fd = handover_fd or os.environ.get(handover.READY_FD_ENV)
    standby_fd = os.environ.get(handover.STANDBY_FD_ENV)
    if handover_fd:
        load_for_handover(server, int(handover_fd), standby=bool(standby_fd))
    app = create_app(settings, server)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
    )
    runner = DrainingServer(config, server, int(ready_fd) if ready_fd else None)
    server.uvicorn = runner
    if handover_fd and standby_fd:
        config.load()  # what uvicorn would do once asked to serve, done ahead
        wait_for_turn(server, int(handover_fd), int(standby_fd))
    logs.event(log, "starting", host=settings.host, port=settings.port, model_path=settings.model_path)
    runner.run(sockets=[listener] if listener is not None else None)
    server.engine.close()  # no thread inside CUDA while the interpreter ends
    if runner.restart:
        raise SystemExit(RESTART_EXIT)


if __name__ == "__main__":
    main()
