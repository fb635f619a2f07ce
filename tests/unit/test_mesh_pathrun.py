"""A round's settling runs (mesh_pathrun): after a round that pulled anything, those paths are pulled once
more from every peer whose edge ran fine, so each edge records what the node got from another; the edge's
record keeps the round's files and conflicts, and a settling run that fails changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_edgerecord import parse_unison_output
from replimesh_node.mesh_runner import carried
from tests.unit.test_mesh_runner import FIXTURES, Capsys, Mesh, edges_by_peer


@pytest.mark.parametrize(
    ("fixture", "pulled"),
    [
        ("copies.exit0.txt", ("from_b.txt",)),  # only what came this way: not docs/new.md, not report.txt
        ("conflict.exit0.txt", ("report.txt",)),  # a conflict resolved for the peer's version
        ("pull_conflict_local_newer.exit1.txt", ("f2",)),  # a deletion pulled; the skipped ones are not
        ("nothing.exit0.txt", ()),
    ],
)
def test_a_run_names_the_paths_it_brought_here(fixture: str, pulled: tuple[str, ...]) -> None:
    text = (FIXTURES / fixture).read_text()
    assert parse_unison_output(text, int(fixture.split(".exit")[1][0])).pulled == pulled


def round_mesh(tmp_path: Path) -> Mesh:
    mesh = Mesh(tmp_path, {"node2": True, "node3": True, "node4": True})
    mesh.fake("node2", runs=[{"fixture": "copies"}, {"fixture": "nothing"}])
    mesh.fake("node3", runs=[{"fixture": "conflict"}, {"fixture": "nothing"}])
    mesh.fake("node4", fixture="ssh_refused")
    return mesh


def test_a_round_that_pulled_settles_those_paths_on_every_edge_that_ran(
    tmp_path: Path, capsys: Capsys
) -> None:
    mesh = round_mesh(tmp_path)
    code, report = mesh.run(capsys)
    assert code == 1  # node4 is unreachable
    calls: dict[str, list[list[str]]] = {}
    for call in mesh.calls():
        calls.setdefault(call["argv"][0], []).append(call["argv"][1:])
    # node2's and node3's edges ran: each pulls, once more, what the round brought from either of them.
    settle = ["-path", "from_b.txt", "-path", "report.txt", "-confirmbigdel=false"]
    for profile in ("node2--shared", "node3--shared"):
        assert calls[profile] == [
            ["-nodeletion", str(mesh.folders["shared"])],
            [*settle, "-nodeletion", str(mesh.folders["shared"])],
        ]
    assert len(calls["node4--shared"]) == 1  # not reached: left to the next round
    # Each record keeps its round run's files and conflicts (the settling runs were no-ops).
    edges = edges_by_peer(report)
    assert (edges["node2"]["result"], edges["node2"]["files_changed"]) == ("ok", 3)
    assert (edges["node3"]["result"], edges["node3"]["conflicts"]) == (
        "conflict",
        ["shared/docs/notes.md", "shared/report.txt"],
    )
    assert mesh.status("node3")["conflicts"] == edges["node3"]["conflicts"]
    assert mesh.status("node3")["files_changed"] == 2 and edges["node4"]["result"] == "unreachable"


def test_a_settling_run_that_fails_leaves_the_rounds_record(tmp_path: Path, capsys: Capsys) -> None:
    mesh = round_mesh(tmp_path)
    mesh.fake("node2", runs=[{"fixture": "copies"}, {"fixture": "ssh_refused"}])
    _code, report = mesh.run(capsys)
    record = mesh.status("node2")
    assert edges_by_peer(report)["node2"]["result"] == record["result"] == "ok"
    assert record["files_changed"] == 3 and record["last_success"] is not None


def test_one_peer_or_nothing_pulled_runs_no_settling(tmp_path: Path, capsys: Capsys) -> None:
    for name in ("lone", "quiet"):
        (tmp_path / name).mkdir()
    lone = Mesh(tmp_path / "lone", {"node2": True})
    lone.fake("node2", fixture="copies")
    assert lone.run(capsys)[0] == 0 and len(lone.calls()) == 1
    quiet = Mesh(tmp_path / "quiet", {"node2": True, "node3": True})
    assert quiet.run(capsys)[0] == 0 and len(quiet.calls()) == 2  # "nothing" on both: no second pass


def test_carried_keeps_both_runs_files_and_conflicts() -> None:
    first = {"peer": "node2", "last_start": "2026-12-05T10:00:00Z", "last_finish": "2026-12-05T10:00:01Z",
             "last_success": "2026-12-05T10:00:01Z", "result": "conflict", "files_changed": 2,
             "conflicts": ["shared/a"], "error": None, "duration_s": 1.0, "first_sync": True,
             "folders": []}  # fmt: skip
    settling = {**first, "last_start": "2026-12-05T10:00:02Z", "last_finish": "2026-12-05T10:00:03Z",
                "last_success": "2026-12-05T10:00:03Z", "result": "ok", "files_changed": 1,
                "conflicts": ["shared/a", "shared/b"], "duration_s": 0.5, "first_sync": False}  # fmt: skip
    merged = carried(first, settling)
    del settling["folders"]
    assert merged == {**settling, "last_start": first["last_start"], "result": "conflict",
                      "files_changed": 3, "conflicts": ["shared/a", "shared/b"], "duration_s": 1.5,
                      "first_sync": True}  # fmt: skip
    assert "folders" not in merged


def test_a_settling_run_applies_no_deletion(tmp_path: Path, capsys: Capsys) -> None:
    """A deletion a settling run finds (held by its first, -nodeletion run) waits for the next round."""
    mesh = round_mesh(tmp_path)
    mesh.fake("node2", runs=[{"fixture": "copies"}, {"fixture": "pull_deletion_held"}])
    _code, report = mesh.run(capsys)
    node2 = [call["argv"][1:] for call in mesh.calls() if call["argv"][0] == "node2--shared"]
    assert len(node2) == 2 and "-nodeletion" in node2[1]  # the round's run and the settling run, no third
    assert edges_by_peer(report)["node2"]["result"] == "ok"
