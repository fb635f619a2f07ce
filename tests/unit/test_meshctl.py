"""meshctl's own logic, without hosts: live progress from runner events, inventory defaults, -e parsing,
the sync table, the topology picture, --version and the exit codes (playbooks replaced by fakes)."""

from __future__ import annotations

import importlib.metadata
import io
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_digest import digest_folder
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_health import mesh_health
from replimesh import conflicts, operate, playbooks
from replimesh.cli import app
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


# --- meshctl's version and exit codes: 0 ok, 1 unhealthy, 2 bad input, 3 could not check ---

MESH = (Path(__file__).resolve().parents[2] / "inventory" / "example.mesh.yml").read_text()


def _meshctl(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The playbooks meshctl started; none run unless a test gives run_playbook a fake."""
    started: list[str] = []

    def no_playbook(playbook: str, *args: Any, **kwargs: Any) -> PlaybookResult:
        started.append(playbook)
        raise AssertionError(f"{playbook} ran")

    monkeypatch.setattr(playbooks, "run_playbook", no_playbook)
    monkeypatch.setattr(operate, "run_playbook", no_playbook)
    return started


def _fake_playbook(
    monkeypatch: pytest.MonkeyPatch,
    report: dict[str, Any] | None = None,
    result: PlaybookResult | None = None,
) -> list[str]:
    """run_playbook replaced: it writes `report` where the playbook would, and returns `result`."""
    started: list[str] = []

    def fake(playbook: str, inventory: Path, *, extravars: dict[str, Any] | None = None,
             **kwargs: Any) -> PlaybookResult:  # fmt: skip
        started.append(playbook)
        for key in ("status_output", "verify_output"):
            if report is not None and key in (extravars or {}):
                Path(extravars[key]).write_text(json.dumps(report))  # type: ignore[index]
        return result or PlaybookResult("successful", 0, {}, Path("/l/x.log"), ())

    monkeypatch.setattr(playbooks, "run_playbook", fake)
    monkeypatch.setattr(operate, "run_playbook", fake)
    return started


@pytest.fixture
def mesh(tmp_path: Path) -> Path:
    path = tmp_path / "site.mesh.yml"
    path.write_text(MESH)
    return path


def test_version_is_the_installed_packages() -> None:
    result = _meshctl("--version")
    assert result.exit_code == 0
    assert result.stdout == f"meshctl {importlib.metadata.version('replimesh')}\n"


def test_version_falls_back_to_pyproject_in_a_checkout_never_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert _meshctl("--version").stdout == f"meshctl {pyproject['project']['version']}\n"


def test_help_documents_the_exit_codes() -> None:
    text = " ".join(_meshctl("--help").stdout.split())
    for code in ("0 success", "1 unhealthy", "2 usage or bad input", "3 could not check"):
        assert code in text


BAD_MESH_FILES = {
    "": "the mesh file is empty",
    "# only a comment\n": "the mesh file is empty",
    "plugin: replimesh_mesh\n": "folders: required",
    "plugin: replimesh_mesh\nfolders: [{name: a, path: /srv/a}]\nnodes: {}\n": "at least 2 nodes, got 0",
    "plugin: replimesh_mesh\nnodes:\n  a: [\n": "line 4, column 1",
    "plugin: replimesh_mesh\nnodes: {}\nnodes: {}\n": "the key 'nodes' is given twice",
    "- just\n- a list\n": "a mapping",
}


@pytest.mark.parametrize(("content", "message"), BAD_MESH_FILES.items())
@pytest.mark.parametrize("command", [["up"], ["add", "node5"], ["remove", "node2", "--yes"], ["sync"],
                                     ["status"], ["verify"], ["rotate-keys"]])  # fmt: skip
def test_a_bad_mesh_file_exits_2_before_any_playbook_runs(
    tmp_path: Path, runs: list[str], command: list[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.mesh.yml"
    path.write_text(content)
    result = _meshctl(*command, "-i", str(path))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"meshctl: error: {path}: ") and message in result.stderr
    assert runs == []


def test_a_missing_mesh_file_exits_2(tmp_path: Path, runs: list[str]) -> None:
    result = _meshctl("up", "-i", str(tmp_path / "gone.mesh.yml"))
    assert (result.exit_code, result.stderr) == (
        2,
        f"meshctl: error: {tmp_path}/gone.mesh.yml: no such mesh file\n",
    )


def test_the_mesh_file_check_takes_tags_and_the_constructed_options(tmp_path: Path) -> None:
    path = tmp_path / "site.mesh.yml"
    path.write_text(MESH.replace("\nvars:\n", "\nvars:\n  motd: !unsafe '{{ not a template }}'\n", 1)
                    + "keyed_groups:\n  - {key: mesh_sync_mode, prefix: sync}\n")  # fmt: skip
    assert playbooks.check_mesh_file(path) == path


def test_bad_extra_vars_exit_2(mesh: Path, runs: list[str]) -> None:
    result = _meshctl("up", "-i", str(mesh), "-e", "novalue")
    assert (result.exit_code, runs) == (2, [])
    assert "-e 'novalue': expected KEY=VALUE" in result.stderr


def test_a_max_lag_of_zero_exits_2(mesh: Path, runs: list[str]) -> None:
    result = _meshctl("status", "-i", str(mesh), "--max-lag", "0")
    assert (result.exit_code, runs) == (2, [])


def test_up_exits_0_when_the_playbook_succeeds(mesh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = _fake_playbook(monkeypatch)
    result = _meshctl("up", "-i", str(mesh))
    assert (result.exit_code, started) == (0, ["bootstrap.yml"])


def test_up_exits_1_when_a_node_failed(mesh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failed = PlaybookResult("failed", 2, {}, Path("/l/x.log"), (), ("node2: failed (sshd -t failed)",))
    _fake_playbook(monkeypatch, result=failed)
    result = _meshctl("up", "-i", str(mesh))
    assert result.exit_code == 1
    assert (
        result.stderr
        == "meshctl: error: bootstrap.yml failed: node2: failed (sshd -t failed). Full log: /l/x.log\n"
    )


def test_up_exits_3_when_ansible_playbook_could_not_run(mesh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_playbook(monkeypatch, result=PlaybookResult("failed", 250, {}, Path("/l/x.log"), ()))
    result = _meshctl("up", "-i", str(mesh))
    assert result.exit_code == 3
    assert "ansible-playbook failed (exit 250)" in result.stderr


def _node(name: str, **fields: Any) -> dict[str, Any]:
    return {"node": name, "reachable": True, "healthy": True, "problems": [], **fields}


HEALTHY = {"healthy": True, "max_lag": 86400, "nodes": [_node("store-a1"), _node("store-a2")], "edges": [],
           "conflicts": 0, "problems": []}  # fmt: skip


@pytest.mark.parametrize(
    ("report", "code"),
    [
        (HEALTHY, 0),
        ({**HEALTHY, "healthy": False, "problems": ["store-a2: cron job missing"]}, 1),
        (mesh_health({"store-a1": {}, "store-a2": {"unreachable": True}}, 0.0), 3),
    ],
    ids=["healthy", "unhealthy", "no-node-answered"],
)
def test_status_exits_by_the_health_it_found(
    mesh: Path, monkeypatch: pytest.MonkeyPatch, report: dict[str, Any], code: int
) -> None:
    _fake_playbook(monkeypatch, report=report)
    result = _meshctl("status", "-i", str(mesh), "--json")
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["exit_code"] == code


@pytest.mark.parametrize("command", ["status", "verify"])
def test_a_check_that_wrote_no_report_exits_3(
    mesh: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    _fake_playbook(monkeypatch, result=PlaybookResult("failed", 1, {}, Path("/l/x.log"), ()))
    result = _meshctl(command, "-i", str(mesh))
    assert result.exit_code == 3
    assert f"{command}.yml ended (failed, exit 1) without a report; see /l/x.log" in result.stderr


def _digest(folder: Path, content: str) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".replimesh-folder").touch()
    (folder / "a.txt").write_text(content)
    return {"folders": {"shared": digest_folder(str(folder)).result(files=True)}, "hashed": 1}


@pytest.mark.parametrize(("second", "code"), [("same", 0), ("changed", 1)])
def test_verify_exits_0_when_identical_and_1_when_replicas_differ(
    mesh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second: str, code: int
) -> None:
    digests = {"store-a1": _digest(tmp_path / "a1", "same"), "store-a2": _digest(tmp_path / "a2", second)}
    _fake_playbook(monkeypatch, report={"digests": digests, "unreachable": {}, "failed": {}})
    result = _meshctl("verify", "-i", str(mesh), "--json")
    assert (result.exit_code, json.loads(result.stdout)["exit_code"]) == (code, code)


def test_verify_exits_3_when_no_node_answered(mesh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = {"store-a1": "timed out", "store-a2": "timed out", "store-b1": "timed out"}
    _fake_playbook(monkeypatch, report={"digests": {}, "unreachable": gone, "failed": {}})
    result = _meshctl("verify", "-i", str(mesh), "--json", "--allow-unreachable")
    assert result.exit_code == 3


def test_sync_exits_1_when_a_pull_failed_and_3_when_no_node_reported(
    mesh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_playbook(monkeypatch, result=_sync_result())
    assert _meshctl("sync", "-i", str(mesh)).exit_code == 1
    nobody = PlaybookResult("failed", 3, {}, Path("/l/x.log"), (), ("store-a1: unreachable (timed out)",))
    _fake_playbook(monkeypatch, result=nobody)
    result = _meshctl("sync", "-i", str(mesh))
    assert result.exit_code == 3
    assert "edges synced: 0 of 0" in result.stdout


def _recorded(monkeypatch: pytest.MonkeyPatch, result: PlaybookResult | None = None) -> list[dict[str, Any]]:
    """run_playbook replaced: each call's playbook and keyword arguments, returning `result`."""
    calls: list[dict[str, Any]] = []

    def fake(playbook: str, inventory: Path, **kwargs: Any) -> PlaybookResult:
        calls.append({"playbook": playbook, **kwargs})
        return result or PlaybookResult("successful", 0, {}, Path("/l/x.log"), ())

    monkeypatch.setattr(playbooks, "run_playbook", fake)
    monkeypatch.setattr(operate, "run_playbook", fake)
    return calls


def test_up_add_and_remove_take_check_diff_and_up_a_limit(
    mesh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _recorded(monkeypatch)
    result = _meshctl("up", "-i", str(mesh), "--check", "--diff", "--limit", "store-a1")
    assert result.exit_code == 0 and "bootstrap.yml: checked, nothing changed" in result.stdout
    assert (calls[-1]["check"], calls[-1]["diff"], calls[-1]["limit"]) == (True, True, "store-a1")
    assert _meshctl("add", "store-a2", "-i", str(mesh), "--check").exit_code == 0
    assert (calls[-1]["playbook"], calls[-1]["check"], calls[-1]["diff"]) == ("add-node.yml", True, False)
    # A check changes nothing, so it asks nothing.
    assert _meshctl("remove", "store-a2", "-i", str(mesh), "--check", "--diff").exit_code == 0
    assert (calls[-1]["playbook"], calls[-1]["check"], calls[-1]["diff"]) == ("remove-node.yml", True, True)


def test_uninstall_passes_its_choices_and_asks_first(
    mesh: Path, monkeypatch: pytest.MonkeyPatch, runs: list[str]
) -> None:
    declined = CliRunner().invoke(app, ["uninstall", "-i", str(mesh)], input="n\n")
    assert declined.exit_code == 1 and runs == []
    calls = _recorded(monkeypatch)
    result = _meshctl("uninstall", "-i", str(mesh), "--yes", "--remove-versions", "--data-owner", "alice")
    assert result.exit_code == 0, result.output
    assert calls[-1]["playbook"] == "uninstall.yml"
    assert calls[-1]["extravars"] == {
        "skip_confirmation": "true",
        "remove_versions": "true",
        "data_owner": "alice",
    }


def test_sync_json_has_every_pull_and_the_counts(mesh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _recorded(monkeypatch, _sync_result())
    result = _meshctl("sync", "-i", str(mesh), "--json")
    assert result.exit_code == 1  # one pull failed
    report = json.loads(result.stdout)
    assert (report["edges_synced"], report["edges_total"], report["files_moved"]) == (1, 2, 3)
    assert [(e["node"], e["peer"], e["result"]) for e in report["edges"]] == [
        ("node1", "node2", "ok"),
        ("node2", "node3", "unreachable"),
    ]


def test_check_and_diff_reach_ansible_playbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Done:
        status, rc, stats, events, stdout = "successful", 0, {}, (), None

    def run(**kwargs: Any) -> Done:
        seen.update(kwargs)
        return Done()

    monkeypatch.setenv("REPLIMESH_LOG_DIR", str(tmp_path))
    monkeypatch.setattr(playbooks.ansible_runner, "run", run)
    playbooks.run_playbook("bootstrap.yml", tmp_path / "x.mesh.yml", check=True, diff=True, progress=False)
    assert seen["cmdline"] == "--check --diff"
    playbooks.run_playbook("bootstrap.yml", tmp_path / "x.mesh.yml", progress=False)
    assert seen["cmdline"] is None


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("conflicts", "notes.md"), "give both PATH and --keep VERSION"),
        (("conflicts", "--keep", "current"), "give both PATH and --keep VERSION"),
        (("conflicts", "--from", "node1"), "--from goes with PATH --keep VERSION"),
        (("conflicts", "../x.md", "--keep", "current"), "inside it"),
        (("conflicts", "notes.md", "--keep", "sub/notes (conflict_on_2026-12-04).md"), "as listed"),
    ],
)
def test_a_bad_conflicts_request_exits_2_before_any_playbook(
    mesh: Path, runs: list[str], monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], said: str
) -> None:
    monkeypatch.setattr(conflicts, "run_playbook", playbooks.run_playbook)  # the `runs` fake
    result = _meshctl(*args, "-i", str(mesh))
    assert (result.exit_code, runs) == (2, []), result.output
    assert said in result.stderr


@pytest.mark.parametrize(("files", "code"), [([], 0), ([{"folder": "shared", "path": "a.md", "now": {},
                                                        "copies": []}], 1)])  # fmt: skip
def test_conflicts_exits_1_while_a_node_holds_a_copy(
    mesh: Path, monkeypatch: pytest.MonkeyPatch, files: list[dict[str, Any]], code: int
) -> None:
    report = {"files": files, "nodes": ["node1", "node2"], "failed": []}
    monkeypatch.setattr(conflicts, "conflicts", lambda inventory: json.loads(json.dumps(report)))
    result = _meshctl("conflicts", "-i", str(mesh), "--json")
    assert result.exit_code == code and json.loads(result.stdout) == report
    other = _meshctl("conflicts", "-i", str(mesh), "--json", "--folder", "media")  # none in that folder
    assert other.exit_code == 0 and json.loads(other.stdout)["files"] == []
