"""meshctl's own logic, without hosts: live progress from runner events, inventory defaults, -e parsing,
the sync table, the topology picture."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from replimesh import playbooks
from replimesh.operate import parse_extravars, show_sync, sync_edges
from replimesh.playbooks import PlaybookError, PlaybookResult, resolve_inventory
from replimesh.progress import Progress
from replimesh.topology import _plain, as_lines, draw, with_health


def _event(kind: str, host: str, task: str, **res: Any) -> dict[str, Any]:
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


def _progress() -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    return Progress("bootstrap.yml", console=Console(file=out, force_terminal=False, width=40)), out


def test_progress_counts_each_hosts_outcomes_and_keeps_every_event() -> None:
    view, _ = _progress()
    events = [
        {"event": "playbook_on_play_start", "event_data": {"play": "Bootstrap"}},
        _event("runner_on_ok", "node1", "Install unison", changed=True),
        _event("runner_on_ok", "node1", "Template profile", changed=False),
        _event("runner_on_skipped", "node2", "Install unison"),
        _event("runner_on_unreachable", "node3", "Gathering Facts", msg="ssh: connect to host timed out"),
        _event("runner_on_failed", "node2", "Check sshd", msg="sshd -t failed\nline 2"),
    ]
    assert all(view(event) for event in events)  # True: ansible-runner keeps the event
    assert view.play == "Bootstrap"
    assert (view.hosts["node1"].ok, view.hosts["node1"].changed) == (2, 1)  # ok counts changed too
    assert view.hosts["node2"].skipped == 1 and view.hosts["node2"].state == "failed"
    assert view.failures() == [
        "node2: failed (sshd -t failed)",
        "node3: unreachable (ssh: connect to host timed out)",
    ]


def test_progress_off_a_terminal_prints_only_what_changed_or_failed_then_a_recap() -> None:
    view, out = _progress()
    view(_event("runner_on_ok", "node1", "Install unison", changed=True))
    view(_event("runner_on_ok", "node1", "Quiet task"))
    view(_event("runner_on_failed", "node2", "Check sshd", msg="bad config"))
    view.close("failed")
    text = out.getvalue()
    assert "node1: changed: Install unison" in text and "Quiet task" not in text
    assert "node2: failed: Check sshd: bad config" in text
    assert text.rstrip().endswith("  node2 ok=0 changed=0 failed=1 unreachable=0")
    assert "bootstrap.yml: failed\n  node1 ok=2 changed=1 failed=0 unreachable=0\n" in text
    assert view.hosts["node1"].state == "done"


def test_an_ignored_failure_counts_as_ok() -> None:
    view, _ = _progress()
    view({"event": "runner_on_failed", "event_data": {"host": "n1", "task": "t", "ignore_errors": True}})
    assert view.hosts["n1"].ok == 1 and view.failures() == []


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "example.mesh.yml").write_text("plugin: replimesh_mesh\n")
    return tmp_path


def test_inventory_defaults_to_the_lab_while_one_is_up(project: Path) -> None:
    (project / "inventory" / "site.mesh.yml").write_text("plugin: replimesh_mesh\n")
    (project / ".lab").mkdir()
    (project / ".lab" / "lab.mesh.yml").write_text("plugin: replimesh_mesh\n")
    assert resolve_inventory(None) == Path(".lab/lab.mesh.yml")


def test_inventory_defaults_to_the_one_mesh_file_in_inventory(project: Path) -> None:
    (project / "inventory" / "site.mesh.yml").write_text("plugin: replimesh_mesh\n")
    assert resolve_inventory(None) == Path("inventory/site.mesh.yml")


def test_inventory_never_defaults_to_the_example_or_guesses_between_several(project: Path) -> None:
    with pytest.raises(PlaybookError, match="pass -i MESH_FILE"):
        resolve_inventory(None)
    (project / "inventory" / "a.mesh.yml").write_text("")
    (project / "inventory" / "b.mesh.yml").write_text("")
    with pytest.raises(PlaybookError, match=r"several mesh files.*a\.mesh\.yml, inventory/b\.mesh\.yml"):
        resolve_inventory(None)
    with pytest.raises(PlaybookError, match="no such mesh file"):
        resolve_inventory(Path("missing.mesh.yml"))
    assert resolve_inventory(Path("inventory/a.mesh.yml")) == Path("inventory/a.mesh.yml")


def test_logs_go_where_configured_and_only_the_newest_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLIMESH_LOG_DIR", str(tmp_path))
    for i in range(playbooks.LOGS_KEPT + 5):
        (tmp_path / f"20260101-0000{i:02d}-1-sync.log").write_text("old")
    log = playbooks._new_log("bootstrap.yml")
    assert log.parent == tmp_path and log.name.endswith("-bootstrap.log")
    assert len(list(tmp_path.glob("*.log"))) == playbooks.LOGS_KEPT


def test_extra_vars_are_key_value_pairs() -> None:
    assert parse_extravars(["node=node5", "wipe_data=true", "x="]) == {
        "node": "node5",
        "wipe_data": "true",
        "x": "",
    }
    for bad in ("node", "=x", "not a name=1"):
        with pytest.raises(PlaybookError, match="KEY=VALUE"):
            parse_extravars([bad])


def _sync_result() -> PlaybookResult:
    def ok(host: str, edges: list[dict[str, Any]]) -> dict[str, Any]:
        return {"event": "runner_on_ok", "event_data": {"host": host, "task_action": "mesh_sync",
                                                        "res": {"edges": edges}}}  # fmt: skip

    events = (
        ok("node1", [{"peer": "node2", "result": "ok", "files_changed": 3, "conflicts": [], "error": None}]),
        ok("node2", [{"peer": "node3", "result": "unreachable", "files_changed": 0, "error": "timed out"}]),
    )
    return PlaybookResult("failed", 2, {}, Path("x.log"), events)


def test_sync_table_lists_every_edge_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    show_sync(sync_edges(_sync_result()), lines.append)
    assert lines == [
        "edges synced: 1 of 2; files moved: 3; conflicts: 0",
        "node1 <- node2: ok, 3 files",
        "node2 <- node3: unreachable, 0 files (timed out)",
    ]


def test_failure_names_hosts_and_the_log() -> None:
    result = PlaybookResult("failed", 2, {}, Path("/l/x.log"), (), ("node3: unreachable (timed out)",))
    assert result.failure("sync.yml") == "sync.yml failed: node3: unreachable (timed out). Full log: /l/x.log"


GRAPH = {
    "nodes": {"n1": "10.0.0.1", "n2": "10.0.0.2", "n3": "10.0.0.3"},
    "edges": [
        {"a": "n1", "b": "n2"},
        {"a": "n1", "b": "n3"},
        {"a": "n2", "b": "n3"},
    ],
}
REPORT = {
    "healthy": False,
    "nodes": [
        {"node": "n1", "reachable": True, "problems": []},
        {"node": "n2", "reachable": True, "problems": []},
        {"node": "n3", "reachable": False, "problems": ["unreachable"]},
    ],
    "edges": [
        {"pair": ["n1", "n2"], "healthy": True, "conflicts": ["a.txt"]},
        {"pair": ["n1", "n3"], "healthy": False, "conflicts": []},
    ],
}


def test_health_colours_nodes_and_edges_from_the_status_report() -> None:
    graph = with_health(GRAPH, REPORT)
    assert {n: i["health"] for n, i in graph["nodes"].items()} == {
        "n1": "healthy",
        "n2": "healthy",
        "n3": "problem",
    }
    # n1-n3 and n2-n3 touch the unreachable n3: not known; n1-n2 holds a conflict.
    assert [e["health"] for e in graph["edges"]] == ["conflict", "unknown", "unknown"]
    assert with_health(GRAPH, None)["nodes"]["n1"]["health"] == "unknown"
    assert as_lines(graph)[:2] == ["3 nodes, 3 edges", "node n1 10.0.0.1 healthy"]
    assert "edge n1 <-> n3 unknown" in as_lines(graph)


def test_inventory_json_loses_its_unsafe_wrappers() -> None:
    wrapped = {"a": [{"__ansible_unsafe": "x"}], "b": {"__ansible_unsafe": "y"}}
    assert _plain(wrapped) == {"a": ["x"], "b": "y"}


def test_dot_source_draws_each_edge_once_with_arrows_at_both_ends(tmp_path: Path) -> None:
    out = draw(with_health(GRAPH, REPORT), tmp_path / "mesh.dot")
    source = out.read_text()
    assert "n1 -> n3" in source and "n1 -> n2" in source and "n3 -> n1" not in source
    assert "dir=both" in source
    assert "red3" in source and "orange" in source and "dashed" in source


@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_picture_is_rendered(tmp_path: Path, suffix: str) -> None:
    out = draw(with_health(GRAPH, REPORT), tmp_path / f"mesh.{suffix}")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == "png" else b"<svg" in data and b"n3" in data


def test_unknown_picture_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="unknown picture format"):
        draw(with_health(GRAPH, None), tmp_path / "mesh.gif")


def test_readme_variable_reference_is_generated_from_the_argument_specs() -> None:
    from replimesh.reference import ROOT, main, render

    assert main(["--check"]) == 0, "run: python -m replimesh.reference"
    reference = render(ROOT / "roles")
    for role in ("unison", "mesh_ssh", "mesh_member", "mesh_sync"):
        assert f"#### `{role}`" in reference
    assert "| `mesh_sync_mode` |" in reference
