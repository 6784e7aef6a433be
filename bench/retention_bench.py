"""What beat's minute round of sample upkeep costs once the sample table is full (PostgreSQL): for
`--instances` instances sampled every 5 s, a day of raw samples and 30 days of per-minute rollups (the
defaults of TELEMETRY_RAW_RETENTION and TELEMETRY_MINUTE_RETENTION), then `rollup` (the last minute's
raw samples into rollups) and `prune` (what has passed its retention) timed as the round runs them.

    python bench/retention_bench.py --database-url postgres://USER:PASS@127.0.0.1:5432/DB \\
        [--tree <checkout before>] [--tree .] [--instances 100] [--rounds 3] [--out retention.json]

Each tree runs in a process of its own against the database, emptied of samples and of the
benchmark's instances before and after; the rows are written by PostgreSQL itself (generate_series)
and the table analysed. Each round first adds the next minute of raw samples (12 per instance), as
sampling would have, then times the two calls.
"""

from trees import compare, parser

RUN = r"""
import json, sys, time
from datetime import timedelta

import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

call_command("migrate", verbosity=0)
from console.instances.models import Host, Instance
from console.telemetry import retention
from console.telemetry.models import Sample

count, rounds = int(sys.argv[1]), int(sys.argv[2])
Sample.objects.all().delete()
host, _ = Host.objects.get_or_create(name="bench-retention")
Instance.objects.filter(host=host).delete()
Instance.objects.bulk_create(
    Instance(name=f"bench-r-{n:04d}", host=host, runtime="process", command=["true"], base_url="http://127.0.0.1:9")
    for n in range(count)
)
ids = list(Instance.objects.filter(host=host).values_list("pk", flat=True))
start = timezone.now().replace(second=0, microsecond=0)
seed = '''
INSERT INTO telemetry_sample (instance_id, at, resolution, status, probe_ok, p95_ms, gpu_used, data)
SELECT i, %s::timestamptz - make_interval(secs => s * %s), %s, 'ready', true, 100 + s %% 50, 2000000000, '{}'
FROM unnest(%s::int[]) AS i, generate_series(%s, %s) AS s
'''
with connection.cursor() as cursor:
    # 30 days and one minute of rollups (the oldest past retention), a day of raw samples and one
    # minute more (past retention), every minute before the last rolled up.
    cursor.execute(seed, [start - timedelta(minutes=1), 60, 60, ids, 0, 30 * 1440])
    cursor.execute(seed, [start, 5, 0, ids, 1, 17280 + 12])
    cursor.execute("ANALYZE telemetry_sample")
rows = Sample.objects.count()
timings = []
try:
    for n in range(rounds):
        now = start + timedelta(minutes=n + 1, seconds=1)
        with connection.cursor() as cursor:  # the minute just ended, as sampling wrote it
            cursor.execute(seed, [now - timedelta(seconds=1), 5, 0, ids, 0, 11])
        began = time.perf_counter()
        written = retention.rollup(now)
        rolled = time.perf_counter() - began
        began = time.perf_counter()
        deleted = retention.prune(now)
        pruned = time.perf_counter() - began
        timings.append({"rollup_ms": round(rolled * 1000, 1), "rolled_up": written,
                        "prune_ms": round(pruned * 1000, 1), "deleted": deleted})
    print(json.dumps({"instances": count, "rows": rows, "rounds": timings}))
finally:
    Sample.objects.all().delete()
    Instance.objects.filter(host=host).delete()
    host.delete()
"""


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--instances", type=int, default=100)
    arguments.add_argument("--rounds", type=int, default=3)
    args = arguments.parse_args()
    if not (args.database_url or "").startswith("postgres"):
        raise SystemExit("--database-url postgres://...: the rows are written by PostgreSQL's own SQL")
    compare(args, RUN, [args.instances, args.rounds])


if __name__ == "__main__":
    main()
