"""Chart series for an instance over a time range, columnar for uPlot."""

from datetime import timedelta

from django.utils import timezone

from console.telemetry.models import Sample

# Range name -> (span, resolution). Raw samples up to 6 h; minute rollups beyond.
RANGES = {
    "15m": (timedelta(minutes=15), Sample.RAW),
    "6h": (timedelta(hours=6), Sample.RAW),
    "24h": (timedelta(hours=24), Sample.MINUTE),
    "7d": (timedelta(days=7), Sample.MINUTE),
}
COLUMNS = (
    "gpu_used",
    "gpu_total",
    "reserved",
    "allocated",
    "p50_ms",
    "p95_ms",
    "rps",
    "established",
    "close_wait",
    "time_wait",
)


def series(instance, range_name: str, now=None) -> dict:
    span, resolution = RANGES[range_name]
    now = now or timezone.now()
    rows = (
        Sample.objects.filter(instance=instance, resolution=resolution, at__gte=now - span)
        .order_by("at")
        .values_list("at", *COLUMNS)
    )
    data = {"t": []} | {name: [] for name in COLUMNS}
    for row in rows.iterator(chunk_size=5000):
        data["t"].append(round(row[0].timestamp(), 3))
        for name, value in zip(COLUMNS, row[1:], strict=True):
            data[name].append(value)
    return {"range": range_name, "resolution": resolution, "columns": data}
