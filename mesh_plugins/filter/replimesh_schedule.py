"""Filters on the mesh's sync schedule: the systemd timer's `OnCalendar=` lines of a cron expression."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_schedule import ScheduleError, oncalendar


def replimesh_oncalendar(schedule: str) -> list[str]:
    """`'*/15 * * * *' | replimesh_oncalendar` -> `['*-*-* *:00,15,30,45:00']`: when cron would run it."""
    try:
        return oncalendar(str(schedule))
    except ScheduleError as exc:
        raise AnsibleFilterError(f"replimesh_oncalendar: {exc}") from exc


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"replimesh_oncalendar": replimesh_oncalendar}
