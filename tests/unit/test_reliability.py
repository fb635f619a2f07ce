"""tests/reliability.py: records from tests, outcomes from the pytest hook, the rendered document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import reliability


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(reliability, "RESULTS_DIR", tmp_path)
    return tmp_path


def test_record_is_stamped_and_rendered(results: Path) -> None:
    reliability.record("fault", "node killed | mid transfer", nodes=5, bytes=256 << 20, files_lost=0)
    reliability.record("bad input", "hostile names", inputs_tried=12, files_lost=0)
    assert reliability.current_test().endswith("test_reliability.py::test_record_is_stamped_and_rendered")
    reliability.stamp_outcome(reliability.current_test(), "passed", 12.34)
    records = reliability.load_records(results)
    assert [r["category"] for r in records] == ["fault", "bad input"]
    assert records[0]["outcome"] == "passed" and records[0]["seconds"] == 12.3
    text = reliability.render(records)
    row = "| node killed \\| mid transfer | bytes=268435456 (256 MiB), files_lost=0, nodes=5 | passed |"
    assert row in text
    assert "- files lost: 0 in the tests" in text and "- bad inputs tried: 12" in text
    assert "## Bad input" in text


def test_a_second_record_of_the_same_row_replaces_the_first(results: Path) -> None:
    reliability.record("load", "soak", rounds=6)
    reliability.record("load", "soak", rounds=20)
    assert [r["figures"]["rounds"] for r in reliability.load_records(results)] == [20]


def test_figures_must_be_plain(results: Path) -> None:
    with pytest.raises(TypeError, match="figure files"):
        reliability.record("fault", "x", files=[1, 2])


def test_main_writes_the_document(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "doc" / "RELIABILITY.md"
    assert reliability.main(["--results", str(results), "--output", str(out)]) == 1  # nothing recorded
    reliability.record("fault", "partition healed", files_lost=0)
    assert reliability.main(["--results", str(results), "--output", str(out)]) == 0
    assert "partition healed" in out.read_text()


def test_a_committed_long_soak_run_is_rendered_with_its_replay_command(tmp_path: Path) -> None:
    run = {
        "seed": 77, "minutes": 60.0, "nodes": 8, "rounds": 3, "started": "2026-12-03T23:00:00Z",
        "load_at_start": 0.4, "commit": "abc1234", "operations": {"create": 20, "edit": 10},
        "faults": {"reboot": 1, "none": 2}, "unison_killed": 1, "contents_written": 31, "bytes_written": 999,
        "files": 25, "conflict_copies": 1, "identical": True, "verify_exit": 0, "lost": {}, "seconds": 3620.5,
    }  # fmt: skip
    (tmp_path / "run.json").write_text(json.dumps(run))
    runs = reliability.load_soak_runs(tmp_path)
    text = reliability.render([], runs)
    assert "`meshctl soak --minutes 60 --seed 77` on 8 nodes" in text
    assert "30 operations (create 20, edit 10); faults: none 2, reboot 1" in text
    assert "identical True, verify exit 0, lost 0" in text and "in the long soak runs" in text
