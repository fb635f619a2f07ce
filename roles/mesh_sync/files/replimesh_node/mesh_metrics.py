"""Render a node's edge status records as a Prometheus textfile (node_exporter's textfile collector).

Standard library only and pure: the node's sync runner ships this file beside itself (as
``replimesh_node.mesh_metrics``) and writes the text after every run, from *all* the status files in its
state directory, so the file always shows every edge this node has run, not only this run's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .mesh_edgerecord import timestamp

# Results after which the edge counts as up: it synced, or is being synced by another run right now.
UP_KINDS = frozenset({"ok", "conflict", "busy", "skipped"})

# name -> help text; every family is a gauge.
EDGE_FAMILIES: dict[str, str] = {
    "replimesh_edge_last_success_timestamp_seconds": (
        "Unix time of the edge's last fully successful sync (0: never)."
    ),
    "replimesh_edge_last_run_timestamp_seconds": "Unix time the edge's last run finished.",
    "replimesh_edge_up": "1 if the edge's last run synced (ok, conflict, skipped or busy), else 0.",
    "replimesh_edge_conflicts": "Conflicts resolved in the edge's last run.",
    "replimesh_edge_files_changed": "Files transferred in the edge's last run.",
    "replimesh_edge_duration_seconds": "How long the edge's last run took.",
    "replimesh_edge_disk_full": "1 if the edge's last run found a disk full (its error names which), else 0.",
}
WATCHER_FAMILY = "replimesh_watcher_up"
WATCHER_HELP = "1 if the watch-mode watcher is running (only on watch-mode nodes), else 0."
SCHEDULED_FAMILIES: dict[str, tuple[str, str]] = {
    # family -> (key of state/scheduled.json, help)
    "replimesh_scheduled_round_timestamp_seconds": (
        "at",
        "Unix time the scheduler (cron) last started this node's full round.",
    ),
    "replimesh_scheduled_round_period_seconds": (
        "period_s",
        "The longest wait between two rounds of the node's schedule: alert when time() minus the round's"
        " timestamp passes twice this (the scheduler runs no jobs).",
    ),
}
FOLDER_FAMILY = "replimesh_folder_marker_ok"
FOLDER_HELP = "1 if the folder's marker file is present (the folder is mounted and not emptied), else 0."


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def edge_values(record: Mapping[str, Any]) -> dict[str, float]:
    """The gauge values of one status record, by family name."""
    conflicts = record.get("conflicts")
    return {
        "replimesh_edge_last_success_timestamp_seconds": timestamp(record.get("last_success")) or 0.0,
        "replimesh_edge_last_run_timestamp_seconds": timestamp(record.get("last_finish")) or 0.0,
        "replimesh_edge_up": 1.0 if record.get("result") in UP_KINDS else 0.0,
        "replimesh_edge_conflicts": float(len(conflicts) if isinstance(conflicts, list) else 0),
        "replimesh_edge_files_changed": float(record.get("files_changed") or 0),
        "replimesh_edge_duration_seconds": float(record.get("duration_s") or 0.0),
        "replimesh_edge_disk_full": 1.0 if record.get("result") == "diskfull" else 0.0,
    }


def _family(name: str, help_text: str, samples: Iterable[tuple[str, str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for label, value, number in samples:
        lines.append(f'{name}{{{label}="{escape_label(value)}"}} {_number(number)}')
    return lines


def render_metrics(
    records: Sequence[Mapping[str, Any]],
    markers: Mapping[str, bool],
    watcher_up: bool | None = None,
    scheduled: Mapping[str, Any] | None = None,
) -> str:
    """The textfile: one sample per edge (label ``peer``) and per folder (label ``folder``), on a
    watch-mode node (`watcher_up` not None) whether its watcher runs, and once the scheduler has started a
    round (`scheduled`: state/scheduled.json) when, and how long the next may take.

    Records without a peer name are left out; each peer appears once (the first record wins).
    """
    edges: dict[str, dict[str, float]] = {}
    for record in records:
        peer = record.get("peer")
        if isinstance(peer, str) and peer and peer not in edges:
            edges[peer] = edge_values(record)
    lines: list[str] = []
    for name, help_text in EDGE_FAMILIES.items():
        lines += _family(name, help_text, (("peer", peer, edges[peer][name]) for peer in sorted(edges)))
    folder_samples = (("folder", folder, 1.0 if markers[folder] else 0.0) for folder in sorted(markers))
    lines += _family(FOLDER_FAMILY, FOLDER_HELP, folder_samples)
    if watcher_up is not None:
        lines += [f"# HELP {WATCHER_FAMILY} {WATCHER_HELP}", f"# TYPE {WATCHER_FAMILY} gauge"]
        lines.append(f"{WATCHER_FAMILY} {1 if watcher_up else 0}")
    for name, (key, help_text) in SCHEDULED_FAMILIES.items():
        value = (scheduled or {}).get(key)
        number = timestamp(value) if key == "at" else value
        if isinstance(number, int | float) and not isinstance(number, bool):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_number(number)}"]
    return "\n".join(lines) + "\n"
