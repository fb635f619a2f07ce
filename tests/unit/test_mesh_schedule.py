"""mesh_schedule: cron fields, and the longest wait between two rounds of a schedule."""

from __future__ import annotations

import pytest

from mesh_plugins.module_utils.mesh_schedule import ScheduleError, expand, longest_gap_s


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
