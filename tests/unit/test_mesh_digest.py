"""mesh_digest: a folder's digest as Unison sees it (ignores, marker, temporary files, conflict copies), the
cache, the comparison of every node's digest, and the module through AnsibleModule (tmp dirs only)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils import basic
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.module_harness import load_module, patch_module_args

core, module = load_module("mesh_digest")


def later() -> int:
    """A digest "a minute from now": no file counts as just changed. Computed per call, since the suite
    may reach these tests long after it imported them."""
    return time.time_ns() + 60 * 10**9


NODES = ["node1", "node2", "node3", "node4", "node5"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(root: Path, rel: str, data: bytes = b"x", mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "shared"
    put(root, core.DEFAULT_MARKER, b"")
    return root


def digest(root: Path, *ignore: str, **kw: Any) -> core.FolderDigest:
    return core.digest_folder(str(root), ignore, now_ns=kw.pop("now_ns", None) or later(), **kw)


# ---- the digest of one folder ----


def test_files_with_size_mode_and_sha_and_a_root_over_them(folder: Path) -> None:
    put(folder, "a.txt", b"hello\n", 0o640)
    put(folder, "docs/b.md", b"# b\n", 0o755)
    result = digest(folder)
    assert result.files == {"a.txt": (6, "0640", sha(b"hello\n")), "docs/b.md": (4, "0755", sha(b"# b\n"))}
    a, b = sha(b"hello\n"), sha(b"# b\n")
    lines = f"a.txt\x006\x000640\x00{a}\ndocs/b.md\x004\x000755\x00{b}\n"
    out = result.result()
    assert out["root"] == sha(lines.encode())
    assert (out["count"], out["bytes"], out["marker"], out["error"]) == (2, 10, True, None)
    assert "files" not in result.result(files=False)


def test_two_replicas_made_differently_have_the_same_root(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    for name in ("z", "a/b", "a/c", "m"):
        put(first, name, name.encode())
    for name in ("m", "a/c", "z", "a/b"):
        put(second, name, name.encode())
    assert digest(first).result()["root"] == digest(second).result()["root"]


def test_marker_and_unison_temporary_files_are_left_out(folder: Path) -> None:
    put(folder, "kept.txt")
    put(folder, "sub/.unison.kept.txt.7f3a.unison.tmp")
    put(folder, ".unison.big.iso.tmp")
    (folder / ".unison.dir.4b.unison.tmp").mkdir()
    put(folder, ".unison.dir.4b.unison.tmp/inside")
    assert set(digest(folder).files) == {"kept.txt"}
    (folder / core.DEFAULT_MARKER).unlink()
    assert digest(folder).marker is False


@pytest.mark.parametrize(
    ("pattern", "ignored", "kept"),
    [
        ("*.tmp", ["a.tmp", "deep/down/b.tmp"], [".hidden.tmp", "a.tmp.txt"]),  # `*` skips a leading dot
        (".*.swp", [".a.swp", "x/.b.swp"], ["a.swp"]),
        ("cache", ["cache/x", "cache/y/z", "a/cache/w"], ["cached", "x/cache.txt"]),  # a dir hides its tree
        ("build/out", ["build/out/x", "build/out/y/z"], ["build/other", "a/build/out/x"]),  # Path: from root
        ("*/gen", ["a/gen/x", "b/gen"], ["gen", "a/b/gen", ".h/gen"]),
        ("*.{log,bak}", ["a.log", "b.bak"], ["c.txt", "log"]),
        ("{x,{y,z}w}.q", ["x.q", "yw.q", "zw.q"], ["y.q", "{x.q"]),
        ("[a-c-]", ["b", "-"], ["d"]),
        ("[ab]?.dat", ["a1.dat", "bz.dat"], ["c1.dat", "a.dat"]),
        ("[!a]*", ["b", "zz"], ["a", "ab", ".x"]),
        (r"\*lit", ["*lit"], ["xlit"]),
    ],
)
def test_ignore_patterns_match_as_unison_does(
    folder: Path, pattern: str, ignored: list[str], kept: list[str]
) -> None:
    for rel in ignored + kept:
        put(folder, rel)
    assert set(digest(folder, pattern).files) == set(kept)


def test_a_bad_pattern_is_an_error_that_names_it(folder: Path) -> None:
    for pattern in ("a[bc", "{a,b"):
        with pytest.raises(core.DigestError, match="never closed"):
            digest(folder, pattern)


def test_conflict_copies_are_files_listed_apart(folder: Path) -> None:
    copied_dir = "dir (conflict_on_2026-11-25)"
    copies = ["notes (conflict_on_2026-11-25).md", "d/report (conflict_on_2026-11-25_was_deleted).txt",
              "README (conflict_on_2026-11-25)"]  # fmt: skip
    for rel in [*copies, "notes.md", "paren (conflict).md", f"{copied_dir}/a", f"{copied_dir}/b/c"]:
        put(folder, rel)
    out = digest(folder).result()
    assert out["conflict_copies"] == sorted([*copies, copied_dir])  # a copied directory, once
    assert out["count"] == 7


def test_symlinks_are_digested_by_target_and_special_names_survive_json(folder: Path) -> None:
    (folder / "link").symlink_to("a/target")
    put(folder, os.fsdecode(b"caf\xe9.txt"), b"latin-1 name")
    files = digest(folder).files
    assert files["link"] == (8, "link", sha(b"a/target"))
    assert files["caf\\xe9.txt"][2] == sha(b"latin-1 name")
    json.dumps(digest(folder).result())


def test_a_missing_folder_is_reported_not_raised(tmp_path: Path) -> None:
    result = digest(tmp_path / "absent")
    assert result.error and "not a directory" in result.error and result.files == {}


# ---- the cache ----


def test_a_second_digest_hashes_nothing_and_a_changed_byte_is_hashed_again(folder: Path) -> None:
    for n in range(20):
        put(folder, f"f{n:02d}.bin", bytes([n]) * 100)
    first = digest(folder)
    assert first.hashed == 20
    second = digest(folder, cache=first.cache)
    assert second.hashed == 0 and second.files == first.files
    # One byte changed, same size, mtime put back: the ctime still gives it away.
    target = folder / "f07.bin"
    before = target.stat()
    target.write_bytes(b"\xff" + bytes([7]) * 99)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    third = digest(folder, cache=second.cache)
    assert third.hashed == 1
    assert third.files["f07.bin"][2] == sha(b"\xff" + bytes([7]) * 99) != first.files["f07.bin"][2]


def test_a_file_changed_just_now_is_not_trusted_to_the_cache(folder: Path) -> None:
    put(folder, "fresh.txt")
    result = digest(folder, now_ns=time.time_ns())
    assert "fresh.txt" in result.files and "fresh.txt" not in result.cache


def test_the_cache_file_round_trips_and_belongs_to_its_folder(tmp_path: Path, folder: Path) -> None:
    put(folder, os.fsdecode(b"\xff.bin"))
    cache_dir = str(tmp_path / "state" / "digest")
    entries = digest(folder).cache
    core.save_cache(cache_dir, "shared", str(folder), entries)
    assert core.load_cache(cache_dir, "shared", str(folder)) == entries
    assert core.load_cache(cache_dir, "shared", "/elsewhere") == {}
    assert core.load_cache(cache_dir, "other", str(folder)) == {}
    assert oct(os.stat(cache_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(f"{cache_dir}/shared.json").st_mode & 0o777) == "0o600"
    assert os.listdir(cache_dir) == ["shared.json"]  # no temporary file left behind


def test_a_cache_dir_someone_else_could_write_is_not_used(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(core.CacheError):
        core.load_cache(str(tmp_path / "link"), "shared", "/srv")
    real.chmod(0o777)
    with pytest.raises(core.CacheError, match="writable by another user"):
        core.save_cache(str(real), "shared", "/srv", {})
    with pytest.raises(core.DigestError):
        core.load_cache(str(real), "../x", "/srv")


# ---- the comparison ----


def node_digest(files: dict[str, list[Any]], **folder: Any) -> dict[str, Any]:
    roots = core.root_hash(files)
    copies = sorted({c for c in map(core.conflict_copy, files) if c})
    entry = {"root": roots, "files": files, "conflict_copies": copies, "count": len(files), "bytes": 0,
             "marker": True, "error": None, **folder}  # fmt: skip
    return {"folders": {"shared": entry}, "hashed": 0}


def mesh(files: dict[str, list[Any]], **changes: dict[str, list[Any] | None]) -> dict[str, Any]:
    """Five nodes holding `files`; changes: node -> {path: new entry, or None to remove it}."""
    digests = {}
    for node in NODES:
        mine = dict(files)
        for path, entry in changes.get(node, {}).items():
            if entry is None:
                mine.pop(path)
            else:
                mine[path] = entry
        digests[node] = node_digest(mine)
    return digests


BASE = {f"f{n}.txt": [n, "0644", sha(str(n).encode())] for n in range(5)}
OTHER = [3, "0644", sha(b"changed")]


def test_identical_replicas() -> None:
    report = core.compare(mesh(BASE))
    assert report["identical"] and report["folders"]["shared"]["identical"]
    assert core.exit_code(report) == 0
    assert core.render_lines(report) == ["identical: 5 files in 1 folders on 5 nodes"]


def test_one_byte_differs_on_one_node() -> None:
    report = core.compare(mesh(BASE, node4={"f3.txt": OTHER}))
    assert not report["identical"] and core.exit_code(report) == 1
    [item] = report["folders"]["shared"]["diverging"]
    assert item["path"] == "f3.txt" and item["missing"] == []
    assert [v["nodes"] for v in item["versions"]] == [["node1", "node2", "node3", "node5"], ["node4"]]
    assert item["versions"][1]["sha256"] == OTHER[2]
    assert core.cells(item)["node4"] == OTHER[2][:10]


def test_a_missing_file_and_an_extra_file_are_named_with_their_nodes() -> None:
    report = core.compare(mesh(BASE, node2={"f1.txt": None}, node3={"new.txt": OTHER}))
    missing, extra = report["folders"]["shared"]["diverging"]
    assert (missing["path"], missing["missing"]) == ("f1.txt", ["node2"])
    assert (extra["path"], extra["versions"][0]["nodes"]) == ("new.txt", ["node3"])
    assert extra["missing"] == ["node1", "node2", "node4", "node5"]
    text = "\n".join(core.render_lines(report))
    assert "shared:f1.txt" in text and "node2: missing" in text and "node3: " in text


def test_a_mode_difference_shows_the_modes() -> None:
    report = core.compare(mesh(BASE, node5={"f0.txt": [0, "0600", BASE["f0.txt"][2]]}))
    [item] = report["folders"]["shared"]["diverging"]
    assert core.cells(item)["node5"].endswith(" 0600")


def test_conflict_copies_are_reported_wherever_they_are() -> None:
    copy = "a (conflict_on_2026-11-25).txt"
    everywhere = core.compare(mesh({**BASE, copy: OTHER}))
    assert everywhere["identical"] and everywhere["folders"]["shared"]["conflict_copies"] == {copy: NODES}
    assert f"conflict     shared:{copy} on {','.join(NODES)}" in core.render_lines(everywhere)
    one = core.compare(mesh(BASE, node1={copy: OTHER}))
    assert one["folders"]["shared"]["conflict_copies"] == {copy: ["node1"]} and not one["identical"]


def test_unreachable_nodes_fail_the_check_unless_allowed() -> None:
    digests = mesh(BASE)
    del digests["node5"]
    report = core.compare(digests, {"node5": "Connection timed out"})
    assert report["identical"] and report["unreachable"] == {"node5": "Connection timed out"}
    assert core.exit_code(report) == 1 and core.exit_code(report, allow_unreachable=True) == 0
    assert "unreachable  node5: Connection timed out" in core.render_lines(report)
    diverging = core.compare(mesh(BASE, node1={"f0.txt": None}), ["node6"])
    assert core.exit_code(diverging, allow_unreachable=True) == 1


def test_failed_nodes_folder_problems_and_no_node_at_all_fail_the_check() -> None:
    failed = core.compare(mesh(BASE), failed={"node6": "python3 missing"})
    assert core.exit_code(failed, allow_unreachable=True) == 1
    digests = mesh(BASE)
    digests["node2"]["folders"]["shared"].update(error="/srv/x is not a directory on this node")
    digests["node3"]["folders"]["shared"].update(marker=False)
    report = core.compare(digests)
    assert set(report["folders"]["shared"]["problems"]) == {"node2", "node3"}
    assert report["folders"]["shared"]["diverging"] == [] and core.exit_code(report) == 1
    assert core.render_lines(report)[0].startswith("NOT identical: 2 folder problems")
    nobody = core.compare({}, ["node1"])
    assert core.exit_code(nobody, allow_unreachable=True) == 1


def test_roots_alone_decide_when_they_agree_and_lists_are_needed_when_not() -> None:
    digests = mesh(BASE)
    for node in NODES:
        del digests[node]["folders"]["shared"]["files"]
    assert core.compare(digests)["identical"]
    digests["node4"]["folders"]["shared"]["root"] = "0" * 64
    problems = core.compare(digests)["folders"]["shared"]["problems"]
    assert set(problems) == set(NODES) and "could not be fetched" in problems["node4"]


def test_classify_sorts_registered_results_and_takes_the_later_lists() -> None:
    summary = {"folders": {"shared": {"root": "r"}}, "hashed": 2}
    results = {
        "node1": summary,
        "node2": {"unreachable": True, "msg": "ssh:\n timed out"},
        "node3": {"failed": True, "msg": "boom"},
        "node4": {},
        "node5": summary,
    }
    details = {
        "node1": {"folders": {"shared": {"root": "r", "files": {}}}, "hashed": 1},
        "node5": {"skipped": True},
    }
    inputs = core.classify(results, details)
    assert inputs["unreachable"] == {"node2": "ssh: timed out", "node4": "not reached"}
    assert inputs["failed"] == {"node3": "boom"}
    assert inputs["digests"]["node1"] == {"folders": details["node1"]["folders"], "hashed": 3}
    assert inputs["digests"]["node5"] == {"folders": summary["folders"], "hashed": 2}


def test_the_text_lists_at_most_limit_paths() -> None:
    report = core.compare(mesh(BASE, node1={p: None for p in BASE}))
    lines = core.render_lines(report, limit=2)
    assert (
        sum(line.startswith("diverging") for line in lines) == 2
        and lines[-1] == "... and 3 more diverging paths"
    )


entries = st.sampled_from([[1, "0644", "a" * 64], [1, "0644", "b" * 64], [1, "0600", "a" * 64], None])


@given(
    st.dictionaries(st.sampled_from(NODES[:3]), st.dictionaries(st.sampled_from("pqr"), entries), min_size=3)
)
def test_a_path_diverges_exactly_when_some_node_differs(per_node: dict[str, dict[str, Any]]) -> None:
    listings = {node: {p: e for p, e in files.items() if e is not None} for node, files in per_node.items()}
    report = core.compare({node: node_digest(files) for node, files in listings.items()})
    paths = {p for files in listings.values() for p in files}
    differ = {p for p in paths if len({json.dumps(files.get(p)) for files in listings.values()}) > 1}
    diverging = report["folders"]["shared"]["diverging"]
    assert {item["path"] for item in diverging} == differ and report["identical"] == (not differ)
    for item in diverging:
        holders = [node for version in item["versions"] for node in version["nodes"]]
        assert sorted(holders + item["missing"]) == sorted(listings)


# ---- the module ----


class Exited(Exception):
    pass


class Failed(Exception):
    pass


def run(args: dict[str, Any], check: bool = False) -> dict[str, Any]:
    def exit_json(self: basic.AnsibleModule, **result: Any) -> None:
        raise Exited(result)

    def fail_json(self: basic.AnsibleModule, msg: str, **result: Any) -> None:
        raise Failed({"msg": msg, **result})

    with (
        patch_module_args({**args, "_ansible_check_mode": check}),
        mock.patch.object(basic.AnsibleModule, "exit_json", exit_json),
        mock.patch.object(basic.AnsibleModule, "fail_json", fail_json),
        pytest.raises(Exited) as exited,
    ):
        module.main()
    return exited.value.args[0]


def test_the_module_digests_caches_and_changes_nothing_in_check_mode(tmp_path: Path, folder: Path) -> None:
    put(folder, "a.txt", b"a")
    put(folder, "b.tmp", b"ignored")
    cache_dir = tmp_path / "cache"
    args = {
        "folders": [{"name": "shared", "path": str(folder), "ignore": ["*.tmp"]}],
        "cache_dir": str(cache_dir),
    }
    checked = run(args, check=True)
    assert checked["changed"] is False and checked["hashed"] == 1 and not cache_dir.exists()
    assert checked["folders"]["shared"]["files"] == {"a.txt": [1, "0644", sha(b"a")]}
    with mock.patch.object(core.time, "time_ns", return_value=later()):
        first = run(args)
        second = run({**args, "files": False})
    assert (first["hashed"], second["hashed"]) == (1, 0) and (cache_dir / "shared.json").is_file()
    assert "files" not in second["folders"]["shared"]
    assert second["folders"]["shared"]["root"] == first["folders"]["shared"]["root"]


def test_the_module_compares_and_writes_the_digests_for_meshctl(tmp_path: Path) -> None:
    results = {
        node: {"changed": False, **digest} for node, digest in mesh(BASE, node4={"f3.txt": OTHER}).items()
    }
    results["node5"] = {"unreachable": True, "msg": "timed out"}
    output = tmp_path / "digests.json"
    result = run({"compare": results, "output": str(output)})
    assert result["exit_code"] == 1 and not result["identical"] and result["output_changed"]
    assert "compare" not in result["invocation"]["module_args"]
    assert result["lines"][0] == "NOT identical: 1 diverging paths in 1 folders on 4 nodes"
    written = json.loads(output.read_text())
    assert set(written) == {"digests", "unreachable", "failed"} and written["unreachable"] == {
        "node5": "timed out"
    }
    assert core.compare(**written) == result["report"]
    assert output.stat().st_mode & 0o777 == 0o600
    assert run({"compare": results, "output": str(output)})["output_changed"] is False


def test_the_module_refuses_a_bad_pattern_or_folder_name(tmp_path: Path, folder: Path) -> None:
    for spec, words in (({"name": "shared", "path": str(folder), "ignore": ["[x"]}, "fix the pattern"),
                        ({"name": "../up", "path": str(folder)}, "needs a name")):  # fmt: skip
        with pytest.raises(Failed) as failed:
            run({"folders": [spec], "cache_dir": str(tmp_path / "c")})
        assert words in failed.value.args[0]["msg"]


def test_what_a_node_ignores_on_its_own_is_no_divergence() -> None:
    """node2's .replimeshignore keeps *.log and build/ out of its replica: it lacking them (and holding a
    build/ of its own) diverges from nothing; a file it should hold still does."""
    logs = {"app.log": [3, "0644", sha(b"log")], "build/out.o": [4, "0644", sha(b"obj")]}
    digests = mesh({**BASE, **logs}, node2={"app.log": None, "build/out.o": [1, "0644", sha(b"own")]})
    digests["node2"]["folders"]["shared"]["local_ignore"] = ["*.log", "build"]
    report = core.compare(digests)
    assert report["identical"] and core.exit_code(report) == 0, report["folders"]["shared"]["diverging"]

    digests["node2"]["folders"]["shared"]["files"].pop("f2.txt")
    digests["node2"]["folders"]["shared"]["root"] = "changed"
    [item] = core.compare(digests)["folders"]["shared"]["diverging"]
    assert (item["path"], item["missing"]) == ("f2.txt", ["node2"])
