"""mesh_schedule: cron fields, the longest wait between two rounds of a schedule, and the systemd timer's
OnCalendar= lines that fire when cron would."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_schedule import (
    CRON_FIELDS,
    ScheduleError,
    expand,
    longest_gap_s,
    oncalendar,
)


@pytest.mark.parametrize(
    ("schedule", "minutes"),
    [
        ("*/15 * * * *", 15),
        ("* * * * *", 1),
        ("0 * * * *", 60),
        ("5/20 * * * *", 20),  # 5, 25, 45: from 5 on, as cron reads N/STEP
        ("0,10 * * * *", 50),
        ("30 2 * * *", 1440),
        ("0 3 * * mon", 7 * 1440),
        ("0 3 * * 7", 7 * 1440),  # 7 is Sunday too
        ("0 9-17 * * mon-fri", (24 + 24 + 16) * 60),  # Friday 17:00 to Monday 09:00
        ("0 0 1 * *", 31 * 1440),
        ("0 0 1 * mon", 7 * 1440),  # both day fields restricted: either one runs
        ("0 0 29 feb *", (4 * 365 + 1) * 1440),
    ],
)
def test_longest_gap(schedule: str, minutes: int) -> None:
    assert longest_gap_s(schedule) == minutes * 60


def test_fields_expand_as_cron_reads_them() -> None:
    assert expand("*/15", 0, 59, ()) == {0, 15, 30, 45}
    assert expand("1-5/2,9", 0, 59, ()) == {1, 3, 5, 9}
    assert expand("jan-mar", 1, 12, ("jan", "feb", "mar")) == {1, 2, 3}


@pytest.mark.parametrize("schedule", ["* * * *", "61 * * * *", "5-1 * * * *", "* * * foo *", "*/0 * * * *"])
def test_what_is_not_a_schedule_is_refused(schedule: str) -> None:
    with pytest.raises(ScheduleError):
        longest_gap_s(schedule)


@pytest.mark.parametrize(
    ("schedule", "calendars"),
    [
        ("*/15 * * * *", ["*-*-* *:00,15,30,45:00"]),
        ("* * * * *", ["*-*-* *:*:00"]),
        ("0 3 * * 1-5", ["Mon,Tue,Wed,Thu,Fri *-*-* 03:00:00"]),
        ("5 */6 * jan-mar 7", ["Sun *-01,02,03-* 00,06,12,18:05:00"]),
        # Both day fields restricted: cron runs on a day matching either, so two lines (a timer fires on
        # any of its OnCalendar= lines).
        ("30 2 1,15 * sun", ["*-*-01,15 02:30:00", "Sun *-*-* 02:30:00"]),
        # A day field written with a star is not "restricted" for that rule: both must match.
        ("0 0 */2 * mon", ["Mon *-*-01,03,05,07,09,11,13,15,17,19,21,23,25,27,29,31 00:00:00"]),
    ],
)
def test_a_schedule_becomes_the_timer_calendar(schedule: str, calendars: list[str]) -> None:
    assert oncalendar(schedule) == calendars


def cron_times(schedule: str, start: datetime.datetime, count: int) -> list[datetime.datetime]:
    """The first `count` minutes from `start` on which cron runs `schedule`, minute by minute."""
    fields = schedule.split()
    sets = [expand(t, low, high, names) for t, (_, low, high, names) in zip(fields, CRON_FIELDS, strict=True)]
    minutes, hours, days, months, weekdays = sets
    weekdays = {0 if d == 7 else d for d in weekdays}
    either = not fields[2].startswith("*") and not fields[4].startswith("*")
    found, at = [], start
    while len(found) < count:
        by_day, by_weekday = at.day in days, at.isoweekday() % 7 in weekdays
        day_ok = (by_day or by_weekday) if either else (by_day and by_weekday)
        if at.minute in minutes and at.hour in hours and at.month in months and day_ok:
            found.append(at)
        at += datetime.timedelta(minutes=1)
    return found


ELAPSE_RE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    "schedule",
    ["*/15 * * * *", "7 */5 * * *", "0 3 * * 1-5", "30 2 1,15 * sun", "0 0 */2 * mon", "45 23 * feb,mar 6"],
)
def test_systemd_fires_the_timer_when_cron_would_run_the_job(schedule: str) -> None:
    """systemd's own reading of the calendar lines (systemd-analyze), against cron's rule, minute by
    minute: the same times, the first 30 of them."""
    count = 30
    start = datetime.datetime(2025, 1, 1)
    proc = subprocess.run(
        ["systemd-analyze", "calendar", f"--iterations={count}", "--base-time=2024-12-31 23:59:30 UTC",
         *oncalendar(schedule)],
        capture_output=True, text=True, timeout=30, check=True, env={**os.environ, "TZ": "UTC"},
    )  # fmt: skip
    fired = sorted({datetime.datetime.fromisoformat(m) for m in ELAPSE_RE.findall(proc.stdout)})
    assert fired[:count] == cron_times(schedule, start, count), proc.stdout
