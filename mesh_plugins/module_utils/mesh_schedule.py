"""Cron schedules: the fields of a 5-field expression, and the longest wait between two of its rounds.

Standard library only and pure: the control node validates `sync.schedule` with these fields (mesh_config),
and the node's runner (shipped as ``replimesh_node.mesh_schedule``) records, at each scheduled round, how
long the next one may take to come, so that a scheduler that stopped running jobs shows (mesh_health).
"""

from __future__ import annotations

import datetime
import itertools
import re

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (label, lowest, highest, names mapped to lowest + index)
CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 0, 7, WEEKDAYS),
)
# Digit runs are bounded so int() never meets a huge literal.
CRON_ITEM_RE = re.compile(
    r"(?:\*|(?P<a>[0-9]{1,4}|[A-Za-z]{3})(?:-(?P<b>[0-9]{1,4}|[A-Za-z]{3}))?)(?:/(?P<step>[0-9]{1,4}))?"
)
# Five years of days: a schedule of 29 February fires twice in it, whatever the year it starts.
HORIZON_DAYS = 5 * 366
_EPOCH = datetime.date(2024, 1, 1)


class ScheduleError(ValueError):
    """Not a 5-field cron expression this module understands."""


def cron_value(text: str, low: int, names: tuple[str, ...]) -> int:
    """The number a field item stands for; -1 (always out of range) for an unknown name."""
    if text.isdigit():
        return int(text)
    lowered = text.lower()
    return low + names.index(lowered) if lowered in names else -1


def expand(text: str, low: int, high: int, names: tuple[str, ...]) -> set[int]:
    """Every value a field matches (`*/15` -> 0, 15, 30, 45)."""
    values: set[int] = set()
    for item in text.split(","):
        match = CRON_ITEM_RE.fullmatch(item)
        if match is None:
            raise ScheduleError(f"invalid cron field item {item!r}")
        first, last = match.group("a", "b")
        start = low if first is None else cron_value(first, low, names)
        end = high if first is None else cron_value(last, low, names) if last else start
        step = int(match.group("step") or 1)
        if not low <= start <= end <= high or step < 1:
            raise ScheduleError(f"cron field item {item!r} is out of {low}..{high}")
        if first is not None and last is None and match.group("step"):
            end = high  # "N/STEP": from N to the end, as cron reads it
        values.update(range(start, end + 1, step))
    return values


def parse_schedule(schedule: str) -> tuple[list[str], list[set[int]]]:
    """The 5 fields of `schedule` and the values each matches (day of week 7 read as 0, Sunday)."""
    fields = schedule.split()
    if len(fields) != len(CRON_FIELDS):
        raise ScheduleError(f"{schedule!r} is not a 5-field cron expression")
    values = [
        expand(text, low, high, names)
        for text, (_field, low, high, names) in zip(fields, CRON_FIELDS, strict=True)
    ]
    values[4] = {0 if day == 7 else day for day in values[4]}
    return fields, values


def longest_gap_s(schedule: str) -> int:
    """The longest time (seconds) between two consecutive rounds of `schedule`, over four years."""
    fields, (minutes, hours, days, months, weekdays) = parse_schedule(schedule)
    times = sorted(hour * 60 + minute for hour in hours for minute in minutes)
    # Cron's rule: with both day fields restricted, a day matching either runs.
    either = not fields[2].startswith("*") and not fields[4].startswith("*")
    matching = []
    for offset in range(HORIZON_DAYS):
        date = _EPOCH + datetime.timedelta(days=offset)
        by_day, by_weekday = date.day in days, date.isoweekday() % 7 in weekdays
        if date.month in months and ((by_day or by_weekday) if either else (by_day and by_weekday)):
            matching.append(offset)
    if not matching or (len(matching) == 1 and len(times) == 1):
        return HORIZON_DAYS * 86400
    gap = max((b - a for a, b in itertools.pairwise(times)), default=0)
    for day, following in itertools.pairwise(matching):
        gap = max(gap, (following - day) * 1440 - times[-1] + times[0])
    return gap * 60


def oncalendar(schedule: str) -> list[str]:
    """The systemd `OnCalendar=` expressions that fire exactly when cron would run `schedule`.

    Each field becomes `*` or the list of values it matches (systemd's `..` ranges and `/` steps differ
    from cron's in corner cases; a list does not). Cron runs a job on a day matching *either* day field
    when both are restricted, systemd on a day matching both: that case takes two expressions.
    """
    fields, values = parse_schedule(schedule)
    minute, hour, day, month = (
        "*" if text == "*" else ",".join(f"{v:02d}" for v in sorted(matched))
        for text, matched in zip(fields[:4], values[:4], strict=True)
    )
    weekdays = "*" if fields[4] == "*" else ",".join(WEEKDAYS[d].capitalize() for d in sorted(values[4]))

    def expression(weekday: str, dom: str) -> str:
        prefix = "" if weekday == "*" else f"{weekday} "
        return f"{prefix}*-{month}-{dom} {hour}:{minute}:00"

    if not fields[2].startswith("*") and not fields[4].startswith("*"):
        return [expression("*", day), expression(weekdays, "*")]
    return [expression(weekdays, day)]
