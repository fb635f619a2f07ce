"""Is the mesh healthy? Per-node and per-edge health from what every node reported, and one verdict.

Pure and standard library only: ``status.yml`` runs it on the control node (through the
``mesh_health`` module) and ``meshctl status`` reads its report.

Each node reports (``mesh_health``): its peers (from mesh.json), its edges' status records, the Unison
version, each folder's marker, whether its cron job is installed and when its scheduler last started a
round (a node whose scheduler runs no job is degraded: not healthy). Every node only pulls, so each end
of an edge holds the record of its own pulls from the other: an edge is healthy when both directions are
(a direction whose end is unreachable is judged by what is known). The row shows the worst direction, or
the freshest when both are well. The edges expected are those that any reachable node lists as an active
peer; an edge that has no record at all has never run, and is unhealthy like one that has never
succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .mesh_edgerecord import timestamp

DEFAULT_MAX_LAG = 86400
# A scheduled round may start up to this late (the cron splay, a busy host) before twice its period counts.
SCHEDULER_SLACK_S = 60
# The last run synced the edge; a skipped path or a failure needs attention.
HEALTHY_RESULTS = frozenset({"ok", "conflict"})


def scheduler_problem(fact: Mapping[str, Any]) -> str | None:
    """Why the node's scheduler runs no job, if it has not started a round within twice its schedule's
    longest wait: cron installed but stopped, or a host where cron may not run jobs (no login uid in a
    container). Ages are the node's own clock (`now`, `at`, `cron_since`), so no clock skew enters."""
    now, record = fact.get("now"), fact.get("scheduled")
    record = record if isinstance(record, Mapping) else {}
    # The schedule may have changed since the last round: the longer of the two waits is the one to allow.
    periods = [
        p for p in (record.get("period_s"), fact.get("schedule_period_s")) if isinstance(p, int | float)
    ]
    if not fact.get("cron") or not isinstance(now, int | float) or not periods:
        return None
    period = max(periods)
    limit, every = 2 * period + SCHEDULER_SLACK_S, f"its schedule allows {period / 60:g} min between rounds"
    timer = fact.get("scheduler") == "timer"
    question = "is its systemd timer running?" if timer else "is cron running jobs?"
    at = timestamp(record.get("at"))
    if at is not None:
        if now - at > limit:
            return f"no scheduled round for {(now - at) / 60:.0f} min ({every}): {question}"
        return None
    since = fact.get("cron_since")
    if isinstance(since, int | float) and now - since > limit:
        installed = "the timer was enabled" if timer else "the cron job was installed"
        return f"no scheduled round since {installed} {(now - since) / 60:.0f} min ago ({every}): {question}"
    return None


def node_health(name: str, fact: Mapping[str, Any] | None) -> dict[str, Any]:
    """One node's row: reachable, Unison version, markers, cron, and the problems that make it unhealthy.

    `fact` is the node's registered mesh_health result; empty or None when the node was not reached.
    """
    if not fact or fact.get("unreachable"):
        reason = str((fact or {}).get("msg") or "not reached").strip().rstrip(":")
        return {"node": name, "reachable": False, "healthy": False, "problems": [f"unreachable: {reason}"]}
    watcher = fact.get("watcher")
    watcher_row = ("alive" if watcher.get("alive") else "down") if isinstance(watcher, Mapping) else None
    row: dict[str, Any] = {
        "node": name,
        "reachable": True,
        "unison": fact.get("unison_version"),
        # The node itself says whether it runs a watcher (the mesh_sync role set it up).
        "mode": "watch" if watcher_row else fact.get("mode", "cron"),
        "watcher": watcher_row,
        "cron": bool(fact.get("cron")),
        "scheduler": fact.get("scheduler") or ("cron" if fact.get("cron") else None),
        "folders": {f["name"]: bool(f.get("marker")) for f in fact.get("folders") or []},
    }
    problems = []
    if fact.get("failed"):
        problems.append(f"status not read: {fact.get('msg') or 'the module failed'}")
    if not row["unison"]:
        problems.append("unison not found")
    problems += [f"folder {folder}: marker missing" for folder, ok in row["folders"].items() if not ok]
    if row["mode"] == "cron" and not row["cron"] and not fact.get("failed"):
        problems.append("scheduled rounds missing (no cron job, no timer)")
    if watcher_row == "down":
        problems.append("watcher not running")
    scheduler = scheduler_problem(fact)
    row["scheduled_round"] = (fact.get("scheduled") or {}).get("at") if row["cron"] else None
    row["problems"] = problems
    # Degraded: the node syncs (notices, pulls), but its safety net, the scheduled round, is not running.
    row["degraded"] = [scheduler] if scheduler else []
    row["healthy"] = not problems and not scheduler
    return row


def _freshest(records: list[tuple[str, Mapping[str, Any]]]) -> tuple[str, Mapping[str, Any]] | None:
    def finish(item: tuple[str, Mapping[str, Any]]) -> float:
        return timestamp(item[1].get("last_finish")) or 0.0

    return max(records, key=finish) if records else None


def _listed(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def edge_health(
    pair: tuple[str, str],
    records: list[tuple[str, Mapping[str, Any]]],
    now: float,
    max_lag: float,
    unreached: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """One edge's row from the records its two ends hold (node, record); `unreached`: nodes not heard from."""
    row: dict[str, Any] = {"pair": list(pair), "edge": f"{pair[0]}<->{pair[1]}"}
    found = _freshest(records)
    if found is None:
        # The record may be on an end that did not answer: then nobody knows, rather than "never".
        silent = [node for node in pair if node in unreached]
        row.update(
            reported_by=None,
            result="unknown" if silent else "never",
            last_success=None,
            last_finish=None,
            lag_s=None,
            files_changed=0,
            conflicts=[],
            error=None,
            healthy=False,
            problems=[f"no record ({', '.join(silent)} unreachable)" if silent else "never synced"],
        )
        return row
    holders = {node for node, _record in records}
    problems: list[str] = []
    judged = []
    for node, record in sorted(records, key=lambda item: item[0]):
        other = pair[1] if node == pair[0] else pair[0]
        mine = _record_problems(record, now, max_lag)
        problems += [f"{node} <- {other}: {problem}" for problem in mine]
        judged.append((bool(mine), node, record))
    for node in pair:
        if node not in holders and node not in unreached:
            problems.append(f"{node} <- {pair[1] if node == pair[0] else pair[0]}: never pulled")
    bad = [(node, record) for failing, node, record in judged if failing]
    node, record = bad[0] if bad else found
    lags = [lag for _node, rec in records if (lag := _lag(rec, now)) is not None]
    # Each end's record is its own last pull: a conflict either end met there is the edge's, even when the
    # other end pulled later and found the two sides already reconciled (both versions kept).
    conflicts = sorted({c for _node, rec in records for c in _listed(rec.get("conflicts"))})
    row.update(
        reported_by=node,
        result=record.get("result", "failed"),
        last_success=record.get("last_success"),
        last_finish=record.get("last_finish"),
        lag_s=max(lags) if lags else None,
        files_changed=int(record.get("files_changed") or 0),
        conflicts=conflicts,
        error=record.get("error"),
        problems=problems,
        healthy=not problems,
    )
    return row


def _lag(record: Mapping[str, Any], now: float) -> float | None:
    success = timestamp(record.get("last_success"))
    return round(max(now - success, 0.0), 1) if success is not None else None


def _record_problems(record: Mapping[str, Any], now: float, max_lag: float) -> list[str]:
    """What is wrong with one direction of an edge, from the record of the end that pulls."""
    result, error, lag = record.get("result", "failed"), record.get("error"), _lag(record, now)
    problems = []
    if result not in HEALTHY_RESULTS:
        problems.append(f"last run {result}" + (f": {error}" if error else ""))
    if lag is None:
        problems.append("never succeeded")
    elif lag > max_lag:
        problems.append(f"last success {lag:.0f} s ago (more than {max_lag:g} s)")
    return problems


def mesh_health(
    facts: Mapping[str, Mapping[str, Any] | None], now: float, max_lag: float = DEFAULT_MAX_LAG
) -> dict[str, Any]:
    """The whole mesh: nodes (in the order given), edges (sorted by pair), problems, and the verdict."""
    nodes = [node_health(name, fact) for name, fact in facts.items()]
    reached = {row["node"]: facts[row["node"]] or {} for row in nodes if row["reachable"]}
    by_pair: dict[tuple[str, str], list[tuple[str, Mapping[str, Any]]]] = {}
    for name, fact in reached.items():
        for peer in fact.get("peers") or []:
            if peer.get("active", True) and isinstance(peer.get("name"), str):
                by_pair.setdefault(_pair(name, peer["name"]), [])
    for name, fact in reached.items():
        for record in fact.get("edges") or []:
            if isinstance(record, Mapping) and isinstance(record.get("peer"), str):
                pair = _pair(name, record["peer"])
                if pair in by_pair:  # a record of a removed edge is history, not part of the mesh
                    by_pair[pair].append((name, record))
    unreached = frozenset(row["node"] for row in nodes if not row["reachable"])
    edges = [edge_health(pair, by_pair[pair], now, max_lag, unreached) for pair in sorted(by_pair)]
    problems = [f"{row['node']}: {problem}" for row in nodes for problem in row["problems"]]
    problems += [f"{row['edge']}: {problem}" for row in edges for problem in row["problems"]]
    degraded = [f"{row['node']}: {reason}" for row in nodes for reason in row.get("degraded", ())]
    return {
        "healthy": not problems and not degraded,
        "degraded": degraded,
        "max_lag": max_lag,
        "nodes": nodes,
        "edges": edges,
        "conflicts": sum(len(row["conflicts"]) for row in edges),
        "problems": problems,
    }


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def headline(report: Mapping[str, Any]) -> str:
    nodes, edges = report["nodes"], report["edges"]
    up = sum(1 for row in nodes if row["reachable"])
    good = sum(1 for row in edges if row["healthy"])
    degraded = report.get("degraded") or []
    state = (
        f"UNHEALTHY ({len(report['problems'])} problems)"
        if report["problems"]
        else f"DEGRADED ({len(degraded)} nodes)"
        if degraded
        else "healthy"
    )
    down = [row["node"] for row in nodes if not row["reachable"]]
    reach = f"{up}/{len(nodes)} nodes reachable" + (f" ({', '.join(down)} not)" if down else "")
    # Edges are known from the peer lists of the nodes that answered: with none, there is nothing to count.
    synced = f"{good}/{len(edges)} edges in sync" if up else "edges not known (no node answered)"
    return f"{state}: {reach}, {synced}, {report['conflicts']} conflicts in the last runs"


def render_lines(report: Mapping[str, Any]) -> list[str]:
    """A short plain-text summary: the headline, a line per node and per edge, then the problems."""
    lines = [headline(report)]
    for row in report["nodes"]:
        if not row["reachable"]:
            lines.append(f"node {row['node']}: UNREACHABLE")
            continue
        markers = ",".join(f"{name}={'ok' if ok else 'MISSING'}" for name, ok in row["folders"].items())
        rounds = {"timer": "systemd timer", "cron": "cron"}.get(row.get("scheduler") or "", "MISSING")
        watcher = {"alive": ", watcher alive", "down": ", watcher DOWN"}.get(row.get("watcher") or "", "")
        lines.append(
            f"node {row['node']}: unison {row['unison'] or '-'}, markers {markers or '-'}, rounds {rounds}"
            + watcher
        )
    for row in report["edges"]:
        lag = "-" if row["lag_s"] is None else f"{row['lag_s']:.0f} s ago"
        lines.append(
            f"edge {row['edge']}: {row['result']}, last success {lag}, {row['files_changed']} files, "
            f"{len(row['conflicts'])} conflicts"
            + (f" ({', '.join(row['conflicts'])})" if row["conflicts"] else "")
        )
    lines += [f"problem: {problem}" for problem in report["problems"]]
    lines += [f"degraded: {reason}" for reason in report.get("degraded") or ()]
    return lines
