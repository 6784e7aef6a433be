"""Where a model process's time goes from its fork to serving: the supervisor's first process and a
handover's new one, each sampled (the Python stacks of all its threads, every 2 ms) from the moment
it is forked until uvicorn starts serving.

    python bench/new_process_profile.py [--model DIR] [--out new_process.json]

The supervisor runs as in production (inference.supervisor's main, its weight holder on a GPU),
with one change: the model processes it forks start a stack sampler first. With no client, one
handover is asked for once the first process is ready. Writes the real-size random-weight checkpoint
if it is missing (`--device cpu`: the smoke model, a dry run of the bench itself).
"""

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import checkpoint  # noqa: E402
from bench.handover_bench import TOKEN, health, new_process_ready  # noqa: E402
from bench.startup_bench import running_server  # noqa: E402
from bench.warmup_profile import frames  # noqa: E402

PROFILE_DIR_ENV = "BENCH_PROFILE_DIR"
BUCKET_SECONDS = 0.025


class Timeline:
    """Samples of every other thread's stack, timed from `began`, until `until` is set."""

    IDLE = ("threading.py:wait", "queue.py:get", "selectors.py:select", "holder.py:_read_exact")

    def __init__(self, began: float, every: float = 0.002, depth: int = 5):
        self.began, self.every, self.depth = began, every, depth
        # (t, seconds it stands for: since the sample before, thread, stack, our frame); a round over
        # every thread's stack takes longer than `every` on a busy process, so rounds are weighed by time
        self.samples: list[tuple[float, float, str, str, str]] = []
        self.until: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="timeline")

    def _run(self) -> None:
        me = threading.get_ident()
        last = 0.0
        while not self.stop.wait(self.every):
            names = {t.ident: t.name for t in threading.enumerate()}
            now = time.monotonic() - self.began
            weight, last = now - last, now
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                stack, ours = frames(frame, self.depth)
                if stack and not stack[0].startswith(self.IDLE):
                    self.samples.append((now, weight, names.get(ident, str(ident)), " < ".join(stack), ours or "-"))

    def result(self) -> dict:
        ready = self.until if self.until is not None else float("inf")
        kept = [s for s in self.samples if s[0] <= ready]
        by_thread: collections.Counter = collections.Counter()
        ours: collections.Counter = collections.Counter()
        stacks: collections.Counter = collections.Counter()
        for _, weight, thread, stack, frame in kept:
            by_thread[thread] += weight
            ours[thread, frame] += weight
            stacks[thread, stack] += weight
        loader = "load-model" if by_thread.get("load-model") else "MainThread"  # a first process loads on its own
        # Our frame and where it is (the innermost frame), by time window, for the loading thread and the
        # scheduler's (which runs the warm-up generation).
        buckets = {thread: collections.defaultdict(collections.Counter) for thread in (loader, "scheduler")}
        for t, weight, thread, stack, frame in kept:
            if thread in buckets:
                buckets[thread][int(t / BUCKET_SECONDS)][f"{frame} @ {stack.split(' < ')[0]}"] += weight

        def timeline(thread: str) -> list[dict]:
            return [
                {
                    "from_s": round(b * BUCKET_SECONDS, 2),
                    "frame": c.most_common(1)[0][0],
                    "share": round(c.most_common(1)[0][1] / BUCKET_SECONDS, 2),
                }
                for b, c in sorted(buckets[thread].items())
            ]

        return {
            "ready_s": None if self.until is None else round(self.until, 3),
            "busy_s_by_thread": {k: round(n, 3) for k, n in by_thread.most_common()},
            "by_our_frame": [{"thread": th, "frame": fr, "s": round(n, 3)} for (th, fr), n in ours.most_common(40)],
            "stacks": [{"thread": th, "stack": st, "s": round(n, 3)} for (th, st), n in stacks.most_common(40)],
            "loading_thread": loader,
            "loading_thread_timeline": timeline(loader),
            "scheduler_timeline": timeline("scheduler"),
        }


def serve() -> None:
    """The supervisor, its model processes sampled from their fork (each writes its samples as it ends)."""
    from inference import server, supervisor

    original = supervisor.serve_child
    startup, load = server.DrainingServer.startup, server.Server.load

    def sampled(listener, handover_fd, ready_fd=None, standby_fd=None) -> int:
        timeline = Timeline(time.monotonic())
        timeline.thread.start()
        marks: dict[str, float] = {}

        def mark(name: str) -> None:  # serving once both: a first process loads after uvicorn starts
            marks[name] = time.monotonic() - timeline.began
            if len(marks) == 2:
                timeline.until = max(marks.values())

        async def started(self, sockets=None):
            mark("uvicorn")
            return await startup(self, sockets)

        def loaded(self) -> None:
            load(self)
            mark("loaded")

        server.DrainingServer.startup, server.Server.load = started, loaded
        role = "handover" if handover_fd is not None else "start"
        try:
            return original(listener, handover_fd, ready_fd, standby_fd)
        finally:
            timeline.stop.set()
            out = Path(os.environ[PROFILE_DIR_ENV]) / f"{role}-{os.getpid()}.json"
            out.write_text(json.dumps({"role": role, "pid": os.getpid(), **timeline.result()}))

    supervisor.serve_child = sampled
    supervisor.main()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/glm-4.6v-flash-random")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the bench itself (smoke model)")
    parser.add_argument("--port", type=int, default=8392)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    checkpoint.ensure(args.model, args.device)
    with tempfile.TemporaryDirectory(prefix="new-process-profile-") as profiles:
        env = {
            "ADMIN_TOKEN": "bench",
            PROFILE_DIR_ENV: profiles,
            "DEVICE": "" if args.device == "cuda" else args.device,
        }
        with running_server(args.model, args.port, module="bench.new_process_profile", **env) as (base, _, _):
            old = health(base)["pid"]
            began = time.perf_counter()
            assert httpx.post(base + "/admin/handover", headers=TOKEN, timeout=10).status_code == 202
            serving_after = round(new_process_ready(base, old, began), 3)
            time.sleep(1)
            handovers = (health(base).get("supervisor") or {}).get("handovers")
        results = [json.loads(p.read_text()) for p in sorted(Path(profiles).glob("*.json"))]
    for result in results:
        print(f"== {result['role']} (pid {result['pid']}): ready {result['ready_s']} s after its fork")
        print("   busy by thread:", json.dumps(result["busy_s_by_thread"]))
        for row in result["by_our_frame"][: args.rows]:
            print(f"   {row['s']:6.3f} s  {row['thread']:<14} {row['frame']}")
        for thread, key in ((result["loading_thread"], "loading_thread_timeline"), ("scheduler", "scheduler_timeline")):
            timeline = " | ".join(f"{b['from_s']}: {b['frame']}" for b in result[key])
            print(f"   {thread}, by {BUCKET_SECONDS * 1000:.0f} ms:", timeline)
    summary = {"handover_serving_after_s": serving_after, "handovers": handovers, "processes": results}
    print(json.dumps({"handover_serving_after_s": serving_after}))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    serve() if os.environ.get(PROFILE_DIR_ENV) else main()  # the supervisor started by main() serves
