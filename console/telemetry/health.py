"""What the console reads of a model server's /health, in the shape it reads it.

/health is the server's answer, not trusted: a section that is a list, a count that is a string, a
figure of 2**70 bytes ended the sample before it was stored (the instance then kept its last sample,
the watchdog and the dashboard blind to it), and a string where the page expects a number stopped
its live panel. Each figure is kept as a finite number or left out, each text cut short.
"""

from console.untrusted import number, pid, text

# The figures read, by section ("" for the top level).
NUMBERS = {
    "": ("in_flight", "uptime_seconds"),
    "timings": ("requests_per_second", "latency_p50", "latency_p95", "ttft_p50", "tokens_per_second"),
    "allocator": ("allocated_bytes", "reserved_bytes", "fragmentation", "device_total_bytes"),
    "process": ("rss_bytes", "open_fds"),
    "totals": ("requests",),
}
TEXTS = {"state": 32, "load_error": 1000}
ENGINE_FIGURES, ENGINE_KEY_CHARS, ENGINE_TEXT_CHARS = 32, 64, 64
STANDBY_STATES = ("loading", "ready", "failed", "discarded")


def readable(health: dict) -> dict:
    """The /health body as the sampler reads it: every section a dict, every figure a number or None,
    texts cut short; an engine's own figures (at most 32, numbers or short texts); the supervisor as
    standby_of reads it."""
    shaped: dict = {key: number(health.get(key)) for key in NUMBERS[""]}
    shaped["pid"] = pid(health.get("pid"))
    for section, keys in NUMBERS.items():
        if section:
            part = health.get(section)
            part = part if isinstance(part, dict) else {}
            shaped[section] = {key: number(part.get(key)) for key in keys}
    for key, most in TEXTS.items():
        shaped[key] = text(health.get(key), most)
    engine = health.get("engine")
    shaped["engine"] = (
        {
            str(key)[:ENGINE_KEY_CHARS]: text(value, ENGINE_TEXT_CHARS) or number(value)
            for key, value in list(engine.items())[:ENGINE_FIGURES]
        }
        if isinstance(engine, dict)
        else None
    )
    supervisor = health.get("supervisor")
    shaped["supervisor"] = (
        {"pid": pid(supervisor.get("pid")), "standby": standby_of(supervisor)} if isinstance(supervisor, dict) else None
    )
    return shaped


def standby_of(supervisor) -> dict | None:
    """The supervisor's standby model process (HANDOVER_STANDBY) as /health reports it, kept only in
    the shape this console shows: state, pid, load, why."""
    standby = supervisor.get("standby") if isinstance(supervisor, dict) else None
    if not isinstance(standby, dict) or standby.get("state") not in STANDBY_STATES:
        return None
    load = number(standby.get("load_seconds"))
    return {
        "state": standby["state"],
        "pid": pid(standby.get("pid")),
        "load_seconds": round(float(load), 2) if load is not None else None,
        "why": text(standby.get("why"), 300) or "",
    }
