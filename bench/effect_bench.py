"""What an instance page's list of operations costs to say each restart's p95 before and after
(console/operations/effect.py), when its 20 operations span a month of samples: a day of raw samples
every 5 s and 29 days of per-minute rollups, about 59,000 rows for the instance.

    python bench/effect_bench.py [--tree <checkout before>] [--tree .] [--database-url URL] [--out effect.json]

Each tree runs in a process of its own against its own fresh database (SQLite in a temporary
directory unless --database-url names another, which is emptied of the benchmark's rows after):
the rows are written once and the tables analysed, then `with_latency_effects` is timed 5 times;
the best and the median.
"""

from trees import compare, parser

RUN = r"""
import json, statistics, time
from datetime import timedelta

import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

call_command("migrate", verbosity=0)
from console.instances.models import Host, Instance
from console.operations.effect import with_latency_effects
from console.operations.models import Operation
from console.telemetry.models import Sample

host, _ = Host.objects.get_or_create(name="bench-effect")
instance, _ = Instance.objects.get_or_create(
    name="bench-effect", defaults=dict(host=host, runtime="process", command=["true"], base_url="http://127.0.0.1:9")
)
now = timezone.now()
rows = [
    Sample(instance=instance, at=now - timedelta(minutes=m), resolution=60, status="ready", probe_ok=True,
           p95_ms=100 + m % 50)
    for m in range(24 * 60, 30 * 24 * 60)
]
rows += [
    Sample(instance=instance, at=now - timedelta(seconds=5 * s), status="ready", probe_ok=True, p95_ms=100 + s % 50)
    for s in range(17280)
]
Sample.objects.bulk_create(rows, batch_size=5000)
for day in range(20):
    started = now - timedelta(days=1.5 * day, hours=1)
    Operation.objects.create(
        instance=instance, kind="restart", state="succeeded", started=started, finished=started + timedelta(seconds=20)
    )
with connection.cursor() as cursor:
    cursor.execute("ANALYZE")  # as autovacuum would have: the planner knows the rows are there
try:
    seconds = []
    for _ in range(5):
        began = time.perf_counter()
        judged = with_latency_effects(instance, Operation.objects.filter(instance=instance)[:20])
        seconds.append(time.perf_counter() - began)
    print(json.dumps({
        "samples": len(rows),
        "operations_judged": sum(1 for operation in judged if operation.latency_effect),
        "best_ms": round(min(seconds) * 1000, 1),
        "median_ms": round(statistics.median(seconds) * 1000, 1),
    }))
finally:
    Operation.objects.filter(instance=instance).delete()
    Sample.objects.filter(instance=instance).delete()
    instance.delete()
    host.delete()
"""


def main() -> None:
    compare(parser(__doc__).parse_args(), RUN, [])


if __name__ == "__main__":
    main()
