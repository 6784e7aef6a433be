"""How long operations and their steps took, as Prometheus histograms over every operation that ended.

Histograms are cumulative: each scrape must count every operation ever ended, and reading them all
again at each scrape grew with the history (a year of nightly restarts of 100 instances: 3.4 s a
scrape on PostgreSQL, most of it spent on their timestamps and steps). An ended operation never
changes, so each process reads it once: `Durations` keeps the figures of every operation up to a
watermark (the one before the oldest still queued or running), and each scrape reads only those
after it. Every process counts the same operations, so any of them answers the same.

What a process has read is kept in the database too (one row, KeptDurations), so that a console process
started later (a deploy, a second web worker, the console after Redis was emptied or the host rebooted)
reads from there on instead of the whole history: its first scrape took 8.5 s with a year of 500
instances, near Prometheus's 10 s timeout. What it takes from the row is checked as its own figures are
at each scrape (the count and the latest end below the mark), and its shape before that (the row may
have been written by an older version, or edited by hand).
"""

import logging
import threading
from bisect import bisect_left
from datetime import datetime
from itertools import accumulate

from django.db import DatabaseError
from django.db.models import Count, Max
from prometheus_client.core import HistogramMetricFamily

from console.api.models import KeptDurations
from console.operations.models import Operation

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
FIELDS = ("pk", "kind", "state", "started", "finished", "steps")
ROW = 1  # KeptDurations' one row


class Tally:
    """Histogram figures by label values: how many fell in each bucket's own range (the last one's above
    every bound), the count and the sum; Prometheus's cumulative buckets are summed up when exposed."""

    def __init__(self, rows: dict | None = None):
        self.rows = {key: list(row) for key, row in (rows or {}).items()}

    def add(self, key: tuple, seconds: float) -> None:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0] * (len(BUCKETS) + 3)
        row[bisect_left(BUCKETS, seconds)] += 1
        row[-2] += 1
        row[-1] += seconds

    def dumps(self) -> list:
        return [[list(key), row] for key, row in self.rows.items()]

    @classmethod
    def loads(cls, value, width: int) -> "Tally":
        """From `dumps`'s list; ValueError for anything else (the row may be another version's, or edited)."""
        rows = {}
        for key, row in value:
            if not (isinstance(key, list) and len(key) == width and all(isinstance(part, str) for part in key)):
                raise ValueError(f"a key that is not {width} label values")
            if not (
                isinstance(row, list)
                and len(row) == len(BUCKETS) + 3
                and all(type(n) is int and n >= 0 for n in row[:-1])
                and type(row[-1]) in (int, float)
                and sum(row[:-2]) == row[-2]
            ):
                raise ValueError("a row that is not a histogram's")
            rows[tuple(key)] = row
        return cls(rows)

    def family(self, name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=labels)
        for key, row in sorted(self.rows.items()):
            buckets = [(str(bound), total) for bound, total in zip(BUCKETS, accumulate(row), strict=False)]
            family.add_metric(list(key), [*buckets, ("+Inf", row[-2])], row[-1])
        return family


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def tally(rows, durations: Tally, steps: Tally) -> None:
    """Add ended operations (rows of FIELDS) to the tallies: the whole operation by kind and outcome,
    each done or failed step by kind, name and outcome."""
    for _pk, kind, state, started, ended, recorded in rows:
        if state in Operation.ACTIVE_STATES or started is None or ended is None:
            continue
        durations.add((kind, state), (ended - started).total_seconds())
        for step in recorded or []:
            if not isinstance(step, dict) or step.get("state") not in ("done", "failed"):
                continue
            seconds = step.get("seconds")
            if seconds is None:
                seconds = _seconds(step.get("started"), step.get("finished"))
            if isinstance(seconds, int | float):
                name = str(step.get("name", ""))
                name = "restart whole" if name.startswith("restart (whole") else name
                steps.add((kind, name, step["state"]), float(seconds))


class Durations:
    """The tallies of every operation up to `upto`, all of them ended; kept across scrapes."""

    def __init__(self):
        self._lock = threading.Lock()
        self.looked = False  # in the database, once: afterwards this process's own reads are the newer
        self._reset()

    def _reset(self) -> None:
        self.upto, self.seen, self.latest = 0, 0, None
        self.durations, self.steps = Tally(), Tally()

    def _keep(self, rows: list) -> None:
        tally(rows, self.durations, self.steps)
        if rows:
            self.upto, self.seen = rows[-1][0], self.seen + len(rows)
            latest = max((row[4] for row in rows if row[4] is not None), default=None)
            if latest is not None and (self.latest is None or latest > self.latest):
                self.latest = latest

    def _load(self) -> None:
        """What another process kept, where there is anything (checked in `read` as this process's own)."""
        value = KeptDurations.objects.filter(pk=ROW).values_list("value", flat=True).first()
        if value is None:
            return
        try:
            upto, seen, latest = value["upto"], value["seen"], value["latest"]
            if type(upto) is not int or type(seen) is not int or not (latest is None or isinstance(latest, str)):
                raise ValueError("a mark that is not one")
            durations, steps = Tally.loads(value["durations"], 2), Tally.loads(value["steps"], 3)
            latest = datetime.fromisoformat(latest) if latest else None
        except (KeyError, TypeError, ValueError) as error:
            log.warning("ignored the kept operation durations: %s", error)
            return
        self.upto, self.seen, self.latest, self.durations, self.steps = upto, seen, latest, durations, steps

    def _save(self) -> None:
        value = {
            "upto": self.upto,
            "seen": self.seen,
            "latest": self.latest.isoformat() if self.latest else None,
            "durations": self.durations.dumps(),
            "steps": self.steps.dumps(),
        }
        try:
            KeptDurations.objects.update_or_create(pk=ROW, defaults={"value": value})
        except DatabaseError as error:  # two processes creating the row at once: the other's is as good
            log.warning("could not keep the operation durations: %s", error)

    def read(self) -> tuple[Tally, Tally]:
        """(operations, steps): every ended operation's figures, reading only those after the mark."""
        with self._lock:
            if not self.looked:
                self.looked = True
                self._load()
            mark = self.upto
            # What was read is still there as read (no operation deleted, no test database rolled back).
            kept = Operation.objects.filter(pk__lte=self.upto).aggregate(n=Count("pk"), latest=Max("finished"))
            if (kept["n"], kept["latest"]) != (self.seen, self.latest):
                self._reset()
                mark = None  # what was kept (here or in the database) is not what is there: kept anew
            # One read, one snapshot, streamed (a year of operations is not held at once): the mark moves to
            # the operation before the first still active in it; those from it on are counted this time
            # only. (One committed later below the mark changes the count above: all is read again then.)
            rows = Operation.objects.filter(pk__gt=self.upto).order_by("pk").values_list(*FIELDS)
            batch, after_active = [], []
            for row in rows.iterator(chunk_size=2000):
                if after_active or row[2] in Operation.ACTIVE_STATES:
                    after_active.append(row)
                    continue
                batch.append(row)
                if len(batch) == 2000:
                    self._keep(batch)
                    batch = []
            self._keep(batch)
            if self.upto != mark:
                self._save()
            durations, steps = Tally(self.durations.rows), Tally(self.steps.rows)  # copies
        tally(after_active, durations, steps)
        return durations, steps


DURATIONS = Durations()  # per process, started from what the database keeps
