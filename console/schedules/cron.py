"""Cron expressions evaluated in a time zone, with one documented answer for DST.

Times are wall-clock times in the schedule's zone:
- a time that does not exist that day (spring forward: 02:30 in New York on
  the second Sunday of March) is skipped that day;
- a time that happens twice (fall back: 01:30 on the first Sunday of November)
  runs once, at its first occurrence.
Fields are celery's (minute hour day-of-month month day-of-week, Sunday = 0);
when both day fields are restricted, a day must match both.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from celery.schedules import ParseException, crontab_parser
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

DAILY = re.compile(r"^(?:daily\s+(?:at\s+)?)?([01]?\d|2[0-3]):([0-5]\d)$", re.I)
SEARCH_DAYS = 4 * 366 + 1  # long enough for "29 Feb"


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class Cron:
    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str

    def __str__(self) -> str:
        return " ".join((self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week))

    @property
    def sets(self):
        return (
            crontab_parser(60).parse(self.minute),
            crontab_parser(24).parse(self.hour),
            crontab_parser(31, 1).parse(self.day_of_month),
            crontab_parser(12, 1).parse(self.month_of_year),
            crontab_parser(7).parse(self.day_of_week),
        )


def parse(text: str) -> Cron:
    """ "03:00", "daily at 03:00" or five cron fields; CronError says what is wrong."""
    text = " ".join(text.split())
    daily = DAILY.match(text)
    if daily:
        return Cron(str(int(daily.group(2))), str(int(daily.group(1))), "*", "*", "*")
    fields = text.split(" ")
    if len(fields) != 5:
        raise CronError(
            ngettext(
                'Use "daily at HH:MM" or five cron fields: minute hour day-of-month month day-of-week '
                "(got %(count)d field).",
                'Use "daily at HH:MM" or five cron fields: minute hour day-of-month month day-of-week '
                "(got %(count)d fields).",
                len(fields),
            )
            % {"count": len(fields)}
        )
    cron = Cron(*fields)
    names = (_("minute"), _("hour"), _("day of month"), _("month"), _("day of week"))
    for name, value, parser in zip(
        names,
        fields,
        (crontab_parser(60), crontab_parser(24), crontab_parser(31, 1), crontab_parser(12, 1), crontab_parser(7)),
        strict=True,
    ):
        try:
            if not parser.parse(value):
                raise CronError(_("The %(field)s field %(value)r matches nothing.") % {"field": name, "value": value})
        except (ValueError, ParseException) as exc:
            if isinstance(exc, CronError):
                raise
            raise CronError(
                _("The %(field)s field %(value)r is not valid: %(why)s")
                % {"field": name, "value": value, "why": _reason(exc)}
            ) from None
    return cron


# What Celery's parser says (celery.schedules.crontab_parser), read back so that the page can say it
# in the operator's language; anything else is shown as the parser said it.
_REASONS = (
    (re.compile(r"^empty part$"), lambda m: _("a part between commas is empty")),
    (re.compile(r"^empty filter$"), lambda m: _("a step after / must be a whole number")),
    (re.compile(r"^negative numbers not supported$"), lambda m: _("negative numbers are not allowed")),
    (
        re.compile(r"^Invalid weekday literal '(.*)'\.$"),
        lambda m: _("%(token)r is neither a number nor a day or month name") % {"token": m[1]},
    ),
    (
        re.compile(r"^Invalid end range: (\d+) > (\d+)\.$"),
        lambda m: _("%(value)s is above the largest value, %(limit)s") % {"value": m[1], "limit": m[2]},
    ),
    (
        re.compile(r"^Invalid beginning range: (\d+) < (\d+)\.$"),
        lambda m: _("%(value)s is below the smallest value, %(limit)s") % {"value": m[1], "limit": m[2]},
    ),
    (re.compile(r"^invalid literal for int\(\)"), lambda m: _("a step after / must be a whole number")),
    (re.compile(r"^slice step cannot be zero$"), lambda m: _("a step of 0 is not allowed")),
)


def _reason(exc: Exception) -> str:
    text = str(exc)
    for pattern, say in _REASONS:
        match = pattern.match(text)
        if match:
            return say(match)
    return text


def zone(name: str) -> ZoneInfo:
    if name not in available_timezones():
        raise CronError(
            _("Unknown time zone %(name)r; use an IANA name such as Asia/Shanghai or UTC.") % {"name": name}
        )
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        raise CronError(_("Unknown time zone %(name)r.") % {"name": name}) from None


def _day_matches(day: date, sets) -> bool:
    _minutes, _hours, doms, months, dows = sets
    return day.month in months and day.day in doms and (day.isoweekday() % 7) in dows


def _times_of(day: date, sets, tz: ZoneInfo):
    """The UTC instants of the day's matching wall times, per the DST rules above."""
    minutes, hours = sorted(sets[0]), sorted(sets[1])
    for hour in hours:
        for minute in minutes:
            wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)  # fold=0: first occurrence
            instant = wall.astimezone(UTC)
            if instant.astimezone(tz).replace(tzinfo=None) != wall.replace(tzinfo=None):
                continue  # does not exist today (spring forward)
            yield instant


def happens_twice(local: datetime) -> bool:
    """Whether this wall-clock time happens twice that day (a fall-back hour): it runs at the first."""
    naive = local.replace(tzinfo=None)
    first, second = (naive.replace(tzinfo=local.tzinfo, fold=fold) for fold in (0, 1))
    return first.utcoffset() != second.utcoffset()


def next_runs(cron: Cron, tz: ZoneInfo, after: datetime, count: int = 5) -> list[datetime]:
    """The next `count` run instants (UTC) strictly after `after`."""
    sets = cron.sets
    found: list[datetime] = []
    day = after.astimezone(tz).date()
    for _day in range(SEARCH_DAYS):
        if _day_matches(day, sets):
            found += [t for t in _times_of(day, sets, tz) if t > after]
            if len(found) >= count:
                return found[:count]
        day += timedelta(days=1)
    return found


def previous_run(cron: Cron, tz: ZoneInfo, at: datetime) -> datetime | None:
    """The latest run instant (UTC) at or before `at`."""
    sets = cron.sets
    day = at.astimezone(tz).date()
    for _day in range(SEARCH_DAYS):
        if _day_matches(day, sets):
            earlier = [t for t in _times_of(day, sets, tz) if t <= at]
            if earlier:
                return earlier[-1]
        day -= timedelta(days=1)
    return None
