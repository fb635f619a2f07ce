"""Mesh health from node reports (per node, per edge from both ends' pull records, the verdict),
the Prometheus textfile parsed back with prometheus_client's parser, and the runner writing it."""

from __future__ import annotations

import importlib
import json
import os
import stat
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils import basic
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_edgerecord import iso_utc, timestamp
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_health import (
    headline,
    mesh_health,
    render_lines,
)
from replimesh_node import mesh_runner
from replimesh_node.mesh_metrics import (
    EDGE_FAMILIES,
    FOLDER_FAMILY,
    render_metrics,
)
from tests.unit.module_harness import patch_module_args

node_status_module = importlib.import_module("ansible_collections.replimesh.mesh.plugins.modules.mesh_health")

NOW = 1_800_000_000.0


def record(
    peer: str, result: str = "ok", ago: float = 60, success_ago: float | None = 60, **extra: Any
) -> dict:
    return {
        "peer": peer,
        "last_start": iso_utc(NOW - ago - 2),
        "last_finish": iso_utc(NOW - ago),
        "last_success": None if success_ago is None else iso_utc(NOW - success_ago),
        "result": result,
        "files_changed": extra.pop("files_changed", 0),
        "conflicts": extra.pop("conflicts", []),
        "error": extra.pop("error", None),
        "duration_s": extra.pop("duration_s", 1.5),
        "first_sync": False,
    }


def fact(node: str, peers: list[str], edges: list[dict], **extra: Any) -> dict[str, Any]:
    return {
        "changed": False,
        "node": node,
        "peers": [{"name": p, "initiator": node < p, "active": True} for p in peers],
        "edges": edges,
        "folders": extra.pop("folders", [{"name": "shared", "path": "/srv/shared", "marker": True}]),
        "unison_version": extra.pop("unison_version", "2.52.1"),
        "mode": "cron",
        "cron": extra.pop("cron", True),
        **extra,
    }


def triangle(**overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A healthy 3-node full mesh: every node pulls from both others and holds those records."""
    facts = {
        "node1": fact("node1", ["node2", "node3"], [record("node2"), record("node3")]),
        "node2": fact("node2", ["node1", "node3"], [record("node1", ago=90), record("node3")]),
        "node3": fact("node3", ["node1", "node2"], [record("node1", ago=90), record("node2", ago=90)]),
    }
    for node, values in overrides.items():
        facts[node] = {**facts[node], **values}
    return facts


def edges_by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["edge"]: row for row in report["edges"]}


def test_a_synced_mesh_is_healthy_with_every_edge_once() -> None:
    report = mesh_health(triangle(), NOW, 3600)
    assert report["healthy"] and report["problems"] == []
    assert list(edges_by_name(report)) == ["node1<->node2", "node1<->node3", "node2<->node3"]
    row = edges_by_name(report)["node2<->node3"]
    assert (row["reported_by"], row["result"], row["lag_s"]) == ("node2", "ok", 60.0)
    assert [n["node"] for n in report["nodes"]] == ["node1", "node2", "node3"]
    assert headline(report).startswith("healthy: 3/3 nodes reachable, 3/3 edges in sync")


@pytest.mark.parametrize("unreached", [{}, {"unreachable": True, "msg": "timed out", "changed": False}, None])
def test_an_unreachable_node_makes_the_mesh_unhealthy_but_its_edges_are_judged(unreached: Any) -> None:
    facts = triangle()
    facts["node3"] = unreached
    report = mesh_health(facts, NOW, 3600)
    node3 = report["nodes"][2]
    assert (node3["reachable"], node3["healthy"]) == (False, False)
    assert not report["healthy"] and report["problems"][0].startswith("node3: unreachable")
    # node1 and node2 still list node3 as a peer and hold their pulls' records; node3's are not known.
    assert all(row["healthy"] for row in report["edges"]) and len(report["edges"]) == 3
    assert headline(report).startswith("UNHEALTHY (1 problems): 2/3 nodes reachable (node3 not), 3/3 edges")


def test_with_no_node_reached_the_headline_names_them_and_counts_no_edge() -> None:
    report = mesh_health(dict.fromkeys(["node1", "node2", "node3"]), NOW, 3600)
    assert not report["healthy"] and report["edges"] == []
    assert headline(report) == (
        "UNHEALTHY (3 problems): 0/3 nodes reachable (node1, node2, node3 not), edges not known (no node"
        " answered), 0 conflicts in the last runs"
    )


def test_both_directions_must_be_well_and_the_row_shows_the_worse() -> None:
    old = record("node2", "unreachable", ago=500, success_ago=900, error="ssh: connect ... refused")
    facts = triangle(
        node1={"edges": [old, record("node3")]},
        node2={"edges": [record("node1", ago=10, success_ago=10, files_changed=4), record("node3")]},
    )
    row = edges_by_name(mesh_health(facts, NOW, 3600))["node1<->node2"]
    assert (row["reported_by"], row["result"], row["lag_s"], row["healthy"]) == (
        "node1",
        "unreachable",
        900.0,
        False,
    )
    assert row["problems"] == ["node1 <- node2: last run unreachable: ssh: connect ... refused"]
    # Both well: the freshest shows.
    facts["node1"]["edges"][0] = record("node2", ago=30, success_ago=30)
    row = edges_by_name(mesh_health(facts, NOW, 3600))["node1<->node2"]
    assert (row["reported_by"], row["files_changed"], row["healthy"]) == ("node2", 4, True)


def test_a_brake_on_one_end_is_shown_even_when_the_other_pulled_later() -> None:
    brake = record("node2", "brake", ago=100, success_ago=900, error="brake: this pull would delete 36 files")
    facts = triangle(node1={"edges": [brake, record("node3")]})
    facts["node2"]["edges"][0] = record("node1", ago=1, success_ago=1)
    report = mesh_health(facts, NOW, 3600)
    row = edges_by_name(report)["node1<->node2"]
    assert (row["result"], row["healthy"]) == ("brake", False)
    assert (
        "node1<->node2: node1 <- node2: last run brake: brake: this pull would delete 36 files"
        in (report["problems"])
    )


def test_a_reachable_end_that_never_pulled_is_a_problem() -> None:
    facts = triangle(node3={"edges": [record("node1", ago=90)]})
    row = edges_by_name(mesh_health(facts, NOW, 3600))["node2<->node3"]
    assert row["problems"] == ["node3 <- node2: never pulled"] and not row["healthy"]


@pytest.mark.parametrize(
    ("rec", "problem"),
    [
        (record("node2", "failed", error="Fatal error: boom"), "last run failed: Fatal error: boom"),
        (record("node2", "skipped"), "last run skipped"),
        (record("node2", "ok", success_ago=7200), "last success 7200 s ago (more than 3600 s)"),
        (record("node2", "marker", success_ago=None, error="no marker"), "never succeeded"),
    ],
)
def test_an_edge_needs_attention(rec: dict[str, Any], problem: str) -> None:
    report = mesh_health(triangle(node1={"edges": [rec, record("node3")]}), NOW, 3600)
    row = edges_by_name(report)["node1<->node2"]
    assert not row["healthy"] and f"node1 <- node2: {problem}" in row["problems"] and not report["healthy"]
    assert f"node1<->node2: node1 <- node2: {problem}" in report["problems"]


def test_a_conflict_is_healthy_and_its_paths_are_listed() -> None:
    rec = record("node2", "conflict", conflicts=["shared/notes.txt"], files_changed=1)
    report = mesh_health(triangle(node1={"edges": [rec, record("node3")]}), NOW, 3600)
    row = edges_by_name(report)["node1<->node2"]
    assert row["healthy"] and row["conflicts"] == ["shared/notes.txt"] and report["conflicts"] == 1
    assert any("(shared/notes.txt)" in line for line in render_lines(report))


def test_a_conflict_one_end_met_is_listed_though_the_other_end_pulled_later_without_one() -> None:
    """node1 pulled from node2 and kept both versions (a conflict); node2 pulled after, from a node1 that
    already held both, and met none: the edge's row still lists it, once, from either end."""
    met = record("node2", "conflict", ago=120, conflicts=["shared/notes.txt"], files_changed=1)
    later = record("node1", "ok", ago=30, files_changed=1)
    report = mesh_health(
        triangle(node1={"edges": [met, record("node3")]}, node2={"edges": [later]}), NOW, 3600
    )
    row = edges_by_name(report)["node1<->node2"]
    assert row["reported_by"] == "node2" and row["result"] == "ok"  # the freshest record still speaks
    assert row["conflicts"] == ["shared/notes.txt"] and report["conflicts"] == 1
    both = record("node1", "conflict", ago=30, conflicts=["shared/notes.txt"], files_changed=1)
    report = mesh_health(
        triangle(node1={"edges": [met, record("node3")]}, node2={"edges": [both]}), NOW, 3600
    )
    assert edges_by_name(report)["node1<->node2"]["conflicts"] == ["shared/notes.txt"]


def test_an_edge_that_never_ran_is_unhealthy_and_a_removed_edge_is_ignored() -> None:
    # node4 was removed; node2<->node3 never ran
    facts = triangle(node2={"edges": [record("node1"), record("node4")]}, node3={"edges": [record("node1")]})
    report = mesh_health(facts, NOW, 3600)
    assert list(edges_by_name(report)) == ["node1<->node2", "node1<->node3", "node2<->node3"]
    row = edges_by_name(report)["node2<->node3"]
    assert (row["result"], row["healthy"], row["problems"]) == ("never", False, ["never synced"])


def test_an_edge_whose_only_record_is_on_an_unreachable_node_is_unknown() -> None:
    facts = triangle(node3={"edges": [record("node1", ago=90)]})  # node3 never pulled from node2
    facts["node2"] = {"unreachable": True, "msg": "Timeout waiting for privilege escalation prompt:"}
    report = mesh_health(facts, NOW, 3600)
    row = edges_by_name(report)["node2<->node3"]
    assert (row["result"], row["problems"]) == ("unknown", ["no record (node2 unreachable)"])
    assert report["problems"][0] == "node2: unreachable: Timeout waiting for privilege escalation prompt"
    assert edges_by_name(report)["node1<->node2"]["healthy"]


def test_an_inactive_peer_is_not_expected_yet() -> None:
    facts = triangle()
    facts["node1"]["peers"].append({"name": "node9", "initiator": True, "active": False})
    assert mesh_health(facts, NOW, 3600)["healthy"]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            {"folders": [{"name": "shared", "path": "/srv/shared", "marker": False}]},
            "folder shared: marker missing",
        ),
        ({"cron": False}, "scheduled rounds missing (no cron job, no timer)"),
        ({"unison_version": None}, "unison not found"),
        ({"failed": True, "msg": "cannot read mesh.json"}, "status not read: cannot read mesh.json"),
    ],
)
def test_a_node_needs_attention(values: dict[str, Any], problem: str) -> None:
    report = mesh_health(triangle(node2=values), NOW, 3600)
    assert report["nodes"][1]["problems"] == [problem] and not report["healthy"]


def test_a_watch_mode_node_needs_its_watcher_alive() -> None:
    alive = {"alive": True, "pid": 42, "last_sync": iso_utc(NOW - 5)}
    report = mesh_health(triangle(node2={"watcher": alive, "cron": False}), NOW, 3600)
    assert report["healthy"], report["problems"]
    row = report["nodes"][1]
    assert (row["mode"], row["watcher"]) == ("watch", "alive")
    assert "watcher alive" in render_lines(report)[2]
    report = mesh_health(triangle(node2={"watcher": {**alive, "alive": False}}), NOW, 3600)
    assert report["nodes"][1]["problems"] == ["watcher not running"]
    assert "watcher DOWN" in render_lines(report)[2]
    assert mesh_health(triangle(), NOW, 3600)["nodes"][0]["watcher"] is None


def test_metrics_say_whether_the_watcher_runs_only_on_watch_mode_nodes() -> None:
    for up in (True, False):
        metrics = parse(render_metrics([record("node2")], {"shared": True}, watcher_up=up))
        assert metrics["replimesh_watcher_up"] == {(): 1.0 if up else 0.0}


def test_timestamps_round_trip() -> None:
    assert timestamp(iso_utc(NOW)) == NOW
    assert (
        timestamp(None) is None
        and timestamp("yesterday") is None
        and timestamp("2026-01-01T00:00:00") is None
    )


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """family -> labels -> value, through prometheus_client's own parser."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_parse_with_one_sample_per_edge_and_folder() -> None:
    records = [
        record("node3", "conflict", conflicts=["shared/a", "shared/b"], files_changed=3, duration_s=2.25),
        record("node2", "unreachable", success_ago=None, error="refused"),
    ]
    text = render_metrics(records, {"shared": True, "photos": False})
    metrics = parse(text)
    assert set(metrics) == {*EDGE_FAMILIES, FOLDER_FAMILY}
    peer2, peer3 = (("peer", "node2"),), (("peer", "node3"),)
    assert metrics["replimesh_edge_last_success_timestamp_seconds"] == {peer2: 0.0, peer3: NOW - 60}
    assert metrics["replimesh_edge_last_run_timestamp_seconds"][peer3] == NOW - 60
    assert metrics["replimesh_edge_up"] == {peer2: 0.0, peer3: 1.0}
    assert metrics["replimesh_edge_conflicts"] == {peer2: 0.0, peer3: 2.0}
    assert metrics["replimesh_edge_files_changed"][peer3] == 3.0
    assert metrics["replimesh_edge_duration_seconds"][peer3] == 2.25
    assert metrics[FOLDER_FAMILY] == {(("folder", "photos"),): 0.0, (("folder", "shared"),): 1.0}
    assert "replimesh_watcher_up" not in text


def test_metrics_escape_labels_and_list_each_peer_once() -> None:
    text = render_metrics([record('we"ird\\'), record('we"ird\\', "failed")], {})
    assert parse(text)["replimesh_edge_up"] == {(("peer", 'we"ird\\'),): 1.0}


def test_the_runner_writes_the_textfile_from_every_status_file(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / ".replimesh-folder").touch()
    config = mesh_runner.parse_config(
        {
            "node": "node1",
            "folders": [{"name": "shared", "path": str(folder)}],
            "peers": [{"name": "node2", "address": "10.0.0.2"}],
            "state_dir": str(tmp_path / "state"),
            "log_file": str(tmp_path / "log" / "sync.log"),
        }
    )
    assert config.metrics_file == f"{tmp_path}/state/metrics/replimesh.prom"
    runner = mesh_runner.Runner(config)
    runner.prepare()
    for peer in ("node2", "node3"):  # node3's record is from an earlier run: it is still shown
        (tmp_path / "state" / "status" / f"{peer}.json").write_text(json.dumps(record(peer)))
    path = runner.write_metrics()
    assert path == Path(config.metrics_file)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755
    metrics = parse(path.read_text())
    assert set(metrics["replimesh_edge_last_success_timestamp_seconds"]) == {
        (("peer", "node2"),),
        (("peer", "node3"),),
    }
    assert metrics[FOLDER_FAMILY] == {(("folder", "shared"),): 1.0}
    assert [p.name for p in path.parent.iterdir()] == ["replimesh.prom"]  # no temporary file left


class Exited(Exception):
    pass


def run_module(args: dict[str, Any], check: bool = False) -> dict[str, Any]:
    def exit_json(self: basic.AnsibleModule, **result: Any) -> None:
        raise Exited(result)

    def fail_json(self: basic.AnsibleModule, msg: str, **result: Any) -> None:
        raise Exited({"failed": True, "msg": msg, **result})

    with (
        patch_module_args({**args, "_ansible_check_mode": check}),
        mock.patch.object(basic.AnsibleModule, "exit_json", exit_json),
        mock.patch.object(basic.AnsibleModule, "fail_json", fail_json),
        pytest.raises(Exited) as exited,
    ):
        node_status_module.main()
    return exited.value.args[0]


@pytest.mark.parametrize("check", [False, True])
def test_the_module_reads_a_node(tmp_path: Path, check: bool) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / ".replimesh-folder").touch()
    (tmp_path / "state" / "status").mkdir(parents=True)
    (tmp_path / "state" / "status" / "node2.json").write_text(json.dumps(record("node2")))
    (tmp_path / "state" / "status" / "broken.json").write_text("{")
    # What the mesh user could plant for root to read: a FIFO (would hang a plain open) and a link.
    os.mkfifo(tmp_path / "state" / "status" / "fifo.json")
    (tmp_path / "secret.json").write_text(json.dumps(record("node9")))
    (tmp_path / "state" / "status" / "link.json").symlink_to(tmp_path / "secret.json")
    config = {
        "node": "node1",
        "folders": [
            {"name": "shared", "path": str(tmp_path / "shared")},
            {"name": "gone", "path": "/nonexistent"},
        ],
        "peers": [{"name": "node2", "address": "10.0.0.2", "initiator": True}],
    }
    (tmp_path / "mesh.json").write_text(json.dumps(config))
    (tmp_path / "cron").write_text(
        "#Ansible: replimesh sync round\n*/15 * * * * replimesh /usr/local/sbin/replimesh-sync\n"
    )
    unison = tmp_path / "unison"
    unison.write_text("#!/bin/sh\necho 'unison version 2.52.1'\n")
    unison.chmod(0o755)
    args = {
        "config": str(tmp_path / "mesh.json"),
        "state_dir": str(tmp_path / "state"),
        "unison": str(unison),
        "timer_link": str(tmp_path / "timers.target.wants" / "replimesh-sync.timer"),
    }
    result = run_module({**args, "cron_file": str(tmp_path / "cron")}, check)
    assert (result["changed"], result["node"], result["unison_version"], result["cron"]) == (
        False,
        "node1",
        "2.52.1",
        True,
    )
    assert [(f["name"], f["marker"]) for f in result["folders"]] == [("shared", True), ("gone", False)]
    assert result["edges"] == [record("node2")] and result["peers"][0]["name"] == "node2"
    assert run_module({**args, "cron_file": str(tmp_path / "nocron")})["cron"] is False
    assert result["scheduled"] is None and result["schedule_period_s"] is None
    assert abs(result["cron_since"] - (tmp_path / "cron").stat().st_mtime) < 1e-6
    assert result["scheduler"] == "cron"
    # Where systemd runs the rounds: the enabled timer (its link, judged by the link's own time).
    link = Path(args["timer_link"])
    link.parent.mkdir()
    link.symlink_to("/nonexistent/replimesh-sync.timer")
    timer = run_module({**args, "cron_file": str(tmp_path / "nocron")})
    assert (timer["cron"], timer["scheduler"]) == (True, "timer")
    assert abs(timer["cron_since"] - link.lstat().st_mtime) < 1e-6
    link.unlink()
    # The runner's record of the scheduler's last round, and the schedule it judges a missing one by.
    mesh_runner.record_scheduled_round(tmp_path / "state", "*/15 * * * *", 900, 1_700_000_000.0)
    again = run_module({**args, "cron_file": str(tmp_path / "cron"), "schedule": "*/15 * * * *"})
    assert again["scheduled"] == {"at": iso_utc(1_700_000_000.0), "schedule": "*/15 * * * *", "period_s": 900}
    assert again["schedule_period_s"] == 900


def test_the_module_fails_clearly_without_mesh_json(tmp_path: Path) -> None:
    result = run_module({"config": str(tmp_path / "missing.json")})
    assert result["failed"] and "is the node bootstrapped?" in result["msg"]


def test_the_module_judges_the_mesh_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "status.json"
    facts = triangle()
    facts["node3"] = {"unreachable": True, "msg": "timed out", "changed": False}
    result = run_module({"nodes": facts, "max_lag": 10**9, "output": str(out)})
    assert result["healthy"] is False and result["lines"][0].startswith("UNHEALTHY")
    assert json.loads(out.read_text())["problems"] == result["report"]["problems"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def _scheduled(now: float, at: float | None, **extra: Any) -> dict[str, Any]:
    record = {"at": iso_utc(at), "schedule": "*/15 * * * *", "period_s": 900} if at is not None else None
    return {"now": now, "scheduled": record, **extra}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (_scheduled(10_000.0, 10_000.0 - 1_000), None),  # the last round 17 min ago: on time
        (_scheduled(10_000.0, 10_000.0 - 1_850), None),  # two periods and the slack: still on time
        (_scheduled(10_000.0, 10_000.0 - 2_900), "no scheduled round for 48 min"),
        # Never ran: judged from when the cron job was installed, by the schedule the control node passed.
        (_scheduled(10_000.0, None, cron_since=9_500.0, schedule_period_s=900), None),
        (_scheduled(10_000.0, None, cron_since=7_000.0, schedule_period_s=900), "since the cron job was"),
        (_scheduled(10_000.0, 10_000.0 - 9_000, cron=False), None),  # no cron job: a problem of its own
        # A systemd timer runs the rounds: the same judgement, a question about the timer.
        (_scheduled(10_000.0, 10_000.0 - 2_900, scheduler="timer"), "is its systemd timer running?"),
        (
            _scheduled(10_000.0, None, cron_since=7_000.0, schedule_period_s=900, scheduler="timer"),
            "since the timer was enabled",
        ),
        # The schedule became hourly after a round of the old one: the hourly wait is allowed.
        (_scheduled(10_000.0, 10_000.0 - 2_900, schedule_period_s=3600), None),
    ],
)
def test_a_node_whose_scheduler_runs_no_round_is_degraded_with_the_reason(
    extra: dict[str, Any], reason: str | None
) -> None:
    facts = triangle()
    facts["node2"] = {**facts["node2"], **extra}
    report = mesh_health(facts, NOW)
    row = report["nodes"][1]
    if reason is None:
        assert row["degraded"] == [] and report["degraded"] == []
        return
    timer = extra.get("scheduler") == "timer"
    question = "is its systemd timer running?" if timer else "is cron running jobs?"
    assert reason in row["degraded"][0] and question in row["degraded"][0]
    assert "15 min between rounds" in row["degraded"][0]
    assert not report["healthy"] and not row["healthy"] and report["problems"] == []
    assert headline(report).startswith("DEGRADED (1 nodes)")
    assert render_lines(report)[-1] == f"degraded: node2: {row['degraded'][0]}"


def test_the_metrics_carry_the_scheduled_round_and_its_period() -> None:
    text = render_metrics([], {}, None, {"at": iso_utc(1_700_000_000.0), "period_s": 900, "schedule": "x"})
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert values["replimesh_scheduled_round_timestamp_seconds"] == 1_700_000_000.0
    assert values["replimesh_scheduled_round_period_seconds"] == 900.0
    assert "replimesh_scheduled_round" not in render_metrics([], {}, None, None)
