"""The figures behind docs/RELIABILITY.md: tests record what they survived, this module renders the doc.

A test records its figures once its assertions have passed (so a record is an outcome, not an intent):

    from tests.reliability import record
    record("fault", "node killed mid 256 MiB transfer", nodes=5, files=1, bytes=256 << 20, files_lost=0)

``category`` groups the rows (``fault``, ``versioning``, ``load``, ``security``, ``bad input``); ``name``
says in a few words what was done; ``figures`` are plain numbers or short strings (``files``, ``bytes``,
``nodes``, ``files_lost``, ``inputs_tried``, ``seconds`` ... whatever the test measured). Each record is
one JSON file in ``.cache/reliability/`` (gitignored), keyed by category and name, so a partial run
updates its own rows and keeps the others'. The pytest hook in tests/conftest.py stamps every record with
its test's outcome and duration; a test that fails after recording shows as failed.

``python -m tests.reliability`` writes docs/RELIABILITY.md from those files, and from the long soak runs
committed in docs/soak/ (``meshctl soak --json`` reports: longer than CI can afford, run by hand, each
with the seed that replays it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(os.environ.get("REPLIMESH_RELIABILITY_DIR", ROOT / ".cache" / "reliability"))
DOC = ROOT / "docs" / "RELIABILITY.md"
SOAK_RUNS = ROOT / "docs" / "soak"
CATEGORIES = ("fault", "versioning", "load", "security", "bad input")
Figure = int | float | str | bool
LIMITS = (
    "- Backups keep `sync.backups` (default 5) older versions per path and node; an older one is dropped.",
    "- Seen in the lab: a same-size edit written in place (same inode) less than a second after the file's",
    "  previous modification time escaped Unison's fast check (size, inode, time) until a full check. Unison",
    "  re-checks before it overwrites, so the edit is not lost; saving by renaming a new file (editors, most",
    "  applications) gives a new inode, which is always seen.",
    "- A file that reaches a node over one edge is new to that node's other edges until they run once with",
    "  it on both ends: an edit on a far node in that window becomes a conflict (both versions kept).",
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "record"


def current_test() -> str:
    """The running test's node id (pytest sets PYTEST_CURRENT_TEST), or '' outside pytest."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]


def record(category: str, name: str, **figures: Figure) -> Path:
    """Record one row of docs/RELIABILITY.md; call it after the test's assertions passed."""
    for key, value in figures.items():
        if not isinstance(value, int | float | str | bool):
            raise TypeError(f"reliability figure {key}={value!r}: must be a number or a short string")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{_slug(category)}--{_slug(name)}.json"
    data = {
        "category": category,
        "name": name,
        "figures": figures,
        "test": current_test(),
        "recorded": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "outcome": "recorded",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def stamp_outcome(test: str, outcome: str, duration: float) -> None:
    """Mark every record made by `test` in this run as passed or failed (called by the pytest hook)."""
    if not RESULTS_DIR.is_dir():
        return
    for path in RESULTS_DIR.glob("*.json"):
        data = _load(path)
        if data and data.get("test") == test and data.get("outcome") == "recorded":
            data.update(outcome=outcome, seconds=round(duration, 1))
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_records(directory: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    records = [r for p in sorted(directory.glob("*.json")) if (r := _load(p))]
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(records, key=lambda r: (order.get(r["category"], len(order)), r["category"], r["name"]))


def _figure(key: str, value: Figure) -> str:
    if key == "bytes" and isinstance(value, int) and value >= 1 << 20:
        return f"bytes={value} ({value / (1 << 20):.0f} MiB)"
    return f"{key}={value}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _total(records: Iterable[dict[str, Any]], key: str) -> int:
    return sum(int(v) for r in records if isinstance(v := r["figures"].get(key), int | float))


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def load_soak_runs(directory: Path = SOAK_RUNS) -> list[dict[str, Any]]:
    return sorted(
        (r for p in directory.glob("*.json") if (r := _load(p))), key=lambda r: r.get("started", "")
    )


def _soak_row(run: dict[str, Any]) -> str:
    ops, faults = run.get("operations", {}), run.get("faults", {})
    cells = (
        f"{run.get('started', '?')} at `{run.get('commit') or '?'}`, load {run.get('load_at_start', '?')}",
        f"`meshctl soak --minutes {run['minutes']:g} --seed {run['seed']}` on {run['nodes']} nodes",
        f"{run['rounds']} rounds; {sum(ops.values())} operations ("
        + ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
        + "); faults: "
        + ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))
        + f"; {run.get('unison_killed', 0)} Unison runs killed mid-pull",
        f"{run['contents_written']} contents ({run['bytes_written']} bytes) in the ledger; at the end"
        f" {run['files']} files, {run['conflict_copies']} conflict copies",
        f"identical {run['identical']}, verify exit {run['verify_exit']}, lost {len(run['lost'])}",
        f"{run['seconds']}",
    )
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render(records: list[dict[str, Any]], soak_runs: list[dict[str, Any]] | None = None) -> str:
    passed = [r for r in records if r.get("outcome") == "passed"]
    dates = sorted(r["recorded"] for r in records)
    lines = [
        "# Reliability: what replimesh survived in its last test run",
        "",
        "<!-- Generated by `python -m tests.reliability` from .cache/reliability/*.json; do not edit. -->",
        "",
        "Every row is a test on real lab hosts (or, for bad input, on the real parsers) that recorded its",
        "figures after its assertions passed. *Files lost* counts files whose content could be found on no",
        "node afterwards (current file, conflict copy or backup); the promise is zero.",
        "",
        f"- tests recorded: {len(records)} ({len(passed)} passed, {len(records) - len(passed)} not)",
        f"- files lost: {_total(records, 'files_lost')} in the tests,"
        f" {sum(len(run['lost']) for run in soak_runs or ())} in the long soak runs",
        f"- bad inputs tried: {_total(records, 'inputs_tried')}",
        f"- recorded between {dates[0] if dates else '-'} and {dates[-1] if dates else '-'}, "
        f"rendered at commit {_commit()}",
    ]
    for category in dict.fromkeys(r["category"] for r in records):
        rows = [r for r in records if r["category"] == category]
        lines += ["", f"## {category.capitalize()}", "", "| What | Figures | Outcome | Seconds | Test |"]
        lines.append("|---|---|---|---|---|")
        for r in rows:
            figures = ", ".join(_figure(k, v) for k, v in r["figures"].items())
            test = r.get("test", "").split("::")[-1] or "-"
            cells = (r["name"], figures, r.get("outcome", "?"), str(r.get("seconds", "-")), f"`{test}`")
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if soak_runs:
        lines += [
            "",
            "## Long soak runs",
            "",
            "`meshctl soak` on a lab mesh, longer than CI affords, committed in docs/soak/ (the seed replays",
            "the run's choices; the lab's timing does the rest). *Lost* counts contents of the ledger, every",
            "version ever written, found on no node: neither current, a conflict copy nor a kept version.",
            "",
            "| Run | Command | Work and faults | Ledger | Outcome | Seconds |",
            "|---|---|---|---|---|---|",
            *(_soak_row(run) for run in soak_runs),
        ]
    lines += ["", "## Limits measured on the way", "", *LIMITS]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="the records' directory")
    parser.add_argument("--output", type=Path, default=DOC, help="the document to write")
    args = parser.parse_args(argv)
    records = load_records(args.results)
    if not records:
        print(f"no records in {args.results}: run the tests first", file=sys.stderr)
        return 1
    text = render(records, load_soak_runs())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}: {len(records)} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
