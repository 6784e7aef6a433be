"""What a Prometheus scrape of /metrics costs once the console has a history: `--instances` instances,
each restarted every night for `--days` days (each restart with its six steps, its effect kept where the
tree keeps one), the latest sample of each.

    python bench/metrics_bench.py [--tree <checkout before>] [--tree .] [--instances 100] [--days 365] \\
        [--database-url URL] [--out metrics.json]

Each tree runs in a process of its own against its own fresh database (SQLite in a temporary directory
unless --database-url names another, which is emptied of the benchmark's rows after): the rows are
written once and the tables analysed, then the whole exposition (`generate_latest` over the console's
collector) is timed 6 times in one process: its first scrape, then the best and the median of the
next 5 (a process reads each ended operation's durations once), its size, how much the process's
peak memory grew over the scrapes, the first scrape of a process started after it (a fresh tally;
where the tree keeps its tally, in the cache or the database, it starts from what the first left there:
run with REDIS_URL to have Redis as in production), and the same once the cache was emptied.
Prometheus's default scrape timeout is 10 s.
"""

from trees import compare, parser

RUN = r"""
import json, resource, statistics, sys, time
from datetime import timedelta

import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

call_command("migrate", verbosity=0)
from console.api.metrics import ConsoleCollector
from console.instances.models import Host, Instance
from console.operations.models import Operation
from console.telemetry.models import Sample

instances_count, days = int(sys.argv[1]), int(sys.argv[2])
keeps_effects = hasattr(Operation, "effect_settled")
host, _ = Host.objects.get_or_create(name="bench-metrics")
now = timezone.now()
instances = Instance.objects.bulk_create(
    Instance(name=f"bench-m-{n:04d}", host=host, runtime="process", command=["true"], base_url="http://127.0.0.1:9")
    for n in range(instances_count)
)
Sample.objects.bulk_create(
    Sample(instance=i, at=now, status="ready", probe_ok=True, p95_ms=120.0, data={"uptime": 3600}) for i in instances
)
names = ["drain", "stop", "release", "start", "ready", "verify"]
for day in range(days):
    started = now - timedelta(days=day, hours=3)
    rows = []
    for instance in instances:
        steps = [
            {"name": name, "state": "done", "seconds": 0.5 + n, "started": None, "finished": None, "detail": "ok"}
            for n, name in enumerate(names)
        ]
        fields = dict(
            instance=instance, kind="restart", trigger="schedule", state="succeeded", created=started,
            started=started, finished=started + timedelta(seconds=20), steps=steps, reason="nightly",
        )
        if keeps_effects:
            fields.update(p95_before_ms=300.0, p95_after_ms=120.0, p95_change="lower", effect_settled=now)
        rows.append(Operation(**fields))
    Operation.objects.bulk_create(rows, batch_size=2000)
with connection.cursor() as cursor:
    cursor.execute("ANALYZE")  # as autovacuum would have: the planner knows the rows are there
registry = CollectorRegistry()
registry.register(ConsoleCollector())
try:
    seconds = []
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(6):
        began = time.perf_counter()
        text = generate_latest(registry)
        seconds.append(time.perf_counter() - began)
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    # A console process started later (a deploy, another web worker): its first scrape, with the cache
    # (Redis where REDIS_URL names one) as the earlier process left it.
    import console.api.metrics as metrics
    from console.api.durations import Durations
    metrics.DURATIONS = Durations()
    began = time.perf_counter()
    generate_latest(registry)
    later_first = time.perf_counter() - began
    # And one started after the cache was emptied (Redis restarted without its data, a flush).
    from django.core.cache import cache
    cache.clear()
    metrics.DURATIONS = Durations()
    began = time.perf_counter()
    generate_latest(registry)
    emptied_first = time.perf_counter() - began
    print(json.dumps({
        "instances": instances_count,
        "operations": Operation.objects.filter(instance__host=host).count(),
        "keeps_effects": keeps_effects,
        "bytes": len(text),
        "first_ms": round(seconds[0] * 1000, 1),
        "best_ms": round(min(seconds[1:]) * 1000, 1),
        "median_ms": round(statistics.median(seconds[1:]) * 1000, 1),
        "later_process_first_ms": round(later_first * 1000, 1),
        "cache_emptied_first_ms": round(emptied_first * 1000, 1),
        "peak_rss_growth_mib": round(peak_growth / 1024, 1),
    }))
finally:
    Operation.objects.filter(instance__host=host).delete()
    Sample.objects.filter(instance__host=host).delete()
    Instance.objects.filter(host=host).delete()
    host.delete()
"""


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--instances", type=int, default=100)
    arguments.add_argument("--days", type=int, default=365)
    args = arguments.parse_args()
    compare(args, RUN, [args.instances, args.days])


if __name__ == "__main__":
    main()
