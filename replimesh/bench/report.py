"""RESULTS.md: the results document rendered for a person (machine, versions, commands, figures, verdicts)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from replimesh.bench.reasons import explain
from replimesh.bench.results import KEYS

SERIES_TEXT = {
    "ssh_hop_s": "large file, raw `ssh cat` node1 -> node2 (the ceiling for a hop)",
    "md5_large_s": "large file, `md5sum` on node1 (what one Unison fingerprint of it costs)",
    "replimesh_hop_s": "large file, node1 -> node2, 2-node mesh (one hop; watch mode, else one runner run)",
    "syncthing_default_small_s": "1 KiB on node1 -> identical on all nodes, Syncthing default (10 s delay)",
    "syncthing_fast_small_s": "1 KiB on node1 -> identical on all nodes, Syncthing fsWatcherDelayS=1",
    "syncthing_large_s": "large file on node1 -> identical on all nodes, Syncthing (fsWatcherDelayS=1)",
    "watch_full_small_s": "1 KiB on node1 -> identical on all nodes, replimesh watch, full mesh",
    "watch_overlay_small_s": "1 KiB on node1 -> identical on all nodes, replimesh watch, overlay",
    "watch_large_s": "large file on node1 -> identical on all nodes, replimesh watch, full mesh",
    "nochange_runner_s": "no-change round node1-node2, small folder + big tree: `replimesh-sync --peer X`",
    "nochange_bare_s": "the same edge: bare `unison PROFILE` per folder, summed (same roots and options)",
    "tree_first_sync_s": "first full sync of the big tree over one edge (informational)",
    "pair_empty_small_s": "1 KiB, node1 -> node2, replimesh watch, 2-node mesh, the small folder",
    "pair_tree_small_s": "1 KiB, node1 -> node2, replimesh watch, 2-node mesh, inside the big tree's folder",
    "ssh_hop_cpu_s": "CPU seconds node1 and node2 spent on one raw `ssh cat` of the large file",
    "replimesh_hop_cpu_s": "CPU seconds node1 and node2 spent on one replimesh hop of the large file",
    "syncthing_large_cpu_s": "CPU seconds all hosts spent until the large file was on all nodes, Syncthing",
    "watch_large_cpu_s": "CPU seconds all hosts spent until the large file was on all nodes, replimesh",
    "ssh_capped_hop_cpu_s": "the same for raw `ssh cat`, link capped",
    "replimesh_capped_hop_cpu_s": "the same for one replimesh hop, link capped",
    "syncthing_capped_large_cpu_s": "the same for the large file on all nodes, Syncthing, link capped",
    "watch_capped_large_cpu_s": "the same for the large file on all nodes, replimesh, link capped",
}


def _num(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render(doc: Mapping[str, Any]) -> str:
    meta = doc.get("meta", {})
    out = [
        "# replimesh vs Syncthing: benchmark results",
        "",
        f"Written by `meshctl bench` on {meta.get('date', '?')} ({_num(meta.get('duration_s'))} s run"
        f"{', QUICK smoke run: sizes and counts are cut down' if meta.get('quick') else ''}).",
        "Every ratio below compares two figures measured in this same run on the same lab hosts.",
        "",
        "Re-run (as root, from the repository root):",
        "",
        "```",
        str(meta.get("command", "meshctl bench")),
        "```",
        "",
        "## Machine and versions",
        "",
    ]
    machine = meta.get("machine", {})
    out += [f"- {key}: {value}" for key, value in machine.items()]
    out += [f"- {key}: {value}" for key, value in meta.get("versions", {}).items()]
    out += [f"- {key}: {value}" for key, value in meta.get("lab", {}).items()]
    notes = meta.get("notes", [])
    if notes:
        out += ["", "## Read this first", ""]
        out += [f"- {note}" for note in notes]
    out += ["", "## Targets (issues 6 and 17)", ""]
    out += _table(
        ["target", "rule", "measured (this run)", "verdict"],
        [[t["name"], t["rule"], t["measured"], _verdict(t["met"])] for t in doc.get("targets", [])],
    )
    reasons = meta.get("reasons", {})
    missed = [t for t in doc.get("targets", []) if t["met"] is not True]
    if missed:
        out += ["", "### Why a target is missed or not measured", ""]
        for t in missed:
            if t["met"] is None:
                why = f"not measured ({t.get('note') or 'a figure is missing'})"
            else:
                why = reasons.get(t["name"]) or t.get("note") or "no analysis recorded for this run"
            out.append(f"- **{t['name']}**: {why}")
    out += ["", "## The figures (results.json)", ""]
    out += _table(["key", "value"], [[f"`{key}`", _num(doc.get(key))] for key in KEYS])
    out += ["", "## Every series: min / median / max (seconds)", ""]
    rows = []
    for name, s in doc.get("series", {}).items():
        if s.get("n"):
            rows.append(
                [SERIES_TEXT.get(name, name), str(s["n"]), _num(s["min"]), _num(s["median"]), _num(s["max"])]
            )
    out += _table(["what", "n", "min", "median", "max"], rows)
    idle = doc.get("idle", {})
    if idle:
        out += ["", "## Idle, per node", ""]
        rows = []
        for name, data in idle.items():
            cpu = ", ".join(_num(v) for v in data.get("cpu_percent", []))
            rss = ", ".join(_num(v) for v in data.get("rss_mib", []))
            rows.append([name, str(data.get("window_s", "")), cpu, rss, ", ".join(data.get("processes", []))])
        out += _table(
            ["what", "window s", "CPU % of one core, node1..N", "RSS MiB, node1..N", "processes"], rows
        )
    if doc.get("not_measured"):
        out += ["", "## Not measured", ""]
        out += [f"- `{key}`: {why}" for key, why in doc["not_measured"].items()]
    method = meta.get("method", [])
    if method:
        out += ["", "## How each figure is measured", ""]
        out += [f"- {line}" for line in method]
    commands = meta.get("commands", [])
    if commands:
        out += ["", "## Commands run on the lab hosts", "", "```"]
        out += list(commands)
        out += ["```"]
    return "\n".join(out) + "\n"


def rerender(results: Path) -> Path:
    """RESULTS.md again from a results.json (after a change to the wording; the figures stay)."""
    doc = json.loads(results.read_text())
    raw = {name: s["values"] for name, s in doc.get("series", {}).items()} | doc.get("params", {})
    doc.setdefault("meta", {})["reasons"] = explain(raw)
    target = results.with_name("RESULTS.md")
    target.write_text(render(doc))
    return target


if __name__ == "__main__":  # python -m replimesh.bench.report bench/results.json
    print(rerender(Path(sys.argv[1])))
