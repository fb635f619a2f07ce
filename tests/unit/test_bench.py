"""The benchmark's pure parts: statistics, results keys and verdicts, RESULTS.md, Syncthing's config."""

from __future__ import annotations

import importlib
import json
import pkgutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import replimesh.bench as bench_package
from replimesh.bench.link import burst_bytes, tbf_argv
from replimesh.bench.reasons import explain
from replimesh.bench.report import render, rerender
from replimesh.bench.results import KEYS, build, check, headline, targets
from replimesh.bench.stats import median, ratio, summary
from replimesh.bench.syncthing import FOLDER, FOLDER_ID, OPTIONS_OFF, Device, configure

FIXTURES = Path(__file__).parent / "fixtures"

# A run where replimesh meets every target.
GOOD = {
    "ssh_hop_s": [1.5, 1.6, 1.4],
    "md5_large_s": [0.75, 0.7, 0.8],
    "replimesh_hop_s": [2.0, 2.1, 1.9],
    "syncthing_default_small_s": [10.1, 10.2, 10.0, 10.3, 10.1],
    "syncthing_fast_small_s": [1.1, 1.2, 1.0, 1.1, 1.3],
    "syncthing_large_s": [9.0],
    "watch_full_small_s": [0.5, 0.6, 0.4, 0.5, 0.7],
    "watch_overlay_small_s": [0.8, 0.9, 0.7, 0.8, 0.9],
    "watch_large_s": [7.0],
    "nochange_runner_s": [3.1, 3.2, 3.0],
    "nochange_bare_s": [3.0, 3.0, 2.9],
    "pair_empty_small_s": [0.4, 0.5, 0.4],
    "pair_tree_small_s": [0.6, 0.5, 0.7],
    "link_mbit": 200,
    "ssh_capped_hop_s": [10.8, 10.9],
    "replimesh_capped_hop_s": [12.0, 12.2],
    "syncthing_capped_large_s": [30.0, 31.0],
    "watch_capped_large_s": [25.0, 26.0],
    "fleet_hosts": 16,
    "bootstrap_first_s": [150.0],
    "bootstrap_rerun_s": [50.0],
    "watch_idle": {
        "cpu_percent": [0.1, 0.2],
        "rss_mib": [10.0, 12.0],
        "window_s": 60,
        "processes": ["python3"],
    },
    "syncthing_idle": {
        "cpu_percent": [0.3, 0.3],
        "rss_mib": [40.0, 44.0],
        "window_s": 60,
        "processes": ["syncthing"],
    },
}


def test_summary_gives_min_median_max_and_the_values():
    assert summary([3.0, 1.0, 2.0, 10.0]) == {
        "n": 4,
        "min": 1.0,
        "median": 2.5,
        "max": 10.0,
        "values": [3.0, 1.0, 2.0, 10.0],
    }
    assert summary([]) == {"n": 0, "min": None, "median": None, "max": None, "values": []}
    assert summary([1.23456])["median"] == 1.235


def test_ratio_and_median_refuse_missing_figures():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None
    assert median([]) is None


def test_headline_has_exactly_the_issue_keys():
    head = headline(GOOD)
    assert tuple(head) == KEYS
    assert head["small_file_all_nodes_median_s"] == 0.5
    assert head["large_file_throughput_ratio_vs_ssh"] == pytest.approx(1.5 / 2.0)
    assert head["idle_rss_mib_per_node"] == 11.0
    assert head["syncthing_idle_cpu_percent_per_node"] == 0.3


def test_every_target_is_met_by_a_good_run_except_the_hop():
    verdicts = {t.name: t.met for t in targets(headline(GOOD), GOOD)}
    assert verdicts.pop("large file, one hop vs raw ssh cat") is True  # 0.75 >= 0.7
    assert all(verdicts.values()), verdicts


@pytest.mark.parametrize(
    ("change", "target"),
    [
        ({"watch_full_small_s": [1.05]}, "small file, full mesh vs Syncthing default"),
        ({"watch_full_small_s": [1.2]}, "small file, full mesh vs Syncthing fsWatcherDelayS=1"),
        ({"replimesh_hop_s": [2.5]}, "large file, one hop vs raw ssh cat"),
        ({"watch_large_s": [9.5]}, "large file on all nodes vs Syncthing"),
        ({"nochange_runner_s": [3.4]}, "no-change full round, runner vs bare unison"),
        ({"pair_tree_small_s": [1.2]}, "one-file change in the big tree vs an empty tree (watch path)"),
        ({"watch_idle": {"cpu_percent": [0.5], "rss_mib": [10.0]}}, "idle CPU per node vs Syncthing"),
        ({"watch_idle": {"cpu_percent": [0.1], "rss_mib": [21.0]}}, "idle memory per node vs Syncthing"),
        ({"watch_capped_large_s": [31.0]}, "large file on all nodes vs Syncthing, link capped at 200 Mbit/s"),
        ({"replimesh_capped_hop_s": [16.0]}, "large file, one hop vs raw ssh cat, link capped at 200 Mbit/s"),
        ({"bootstrap_first_s": [181.0]}, "bootstrap.yml on 16 hosts, first run"),
        ({"bootstrap_rerun_s": [60.5]}, "bootstrap.yml on 16 hosts, no-change re-run"),
    ],
)
def test_a_missed_target_is_reported_as_missed(change, target):
    raw = {**GOOD, **change}
    verdicts = {t.name: t.met for t in targets(headline(raw), raw)}
    assert verdicts[target] is False


def test_the_provisioning_keys_are_for_16_hosts_only():
    head = headline({**GOOD, "fleet_hosts": 8})
    assert head["bootstrap_16_first_s"] is head["bootstrap_16_rerun_s"] is None
    assert headline(GOOD)["bootstrap_16_rerun_s"] == 50.0
    assert headline(GOOD)["overlay_small_file_all_nodes_median_s"] == 0.8


def test_every_bench_module_imports():
    """The bench runs only on request (it needs a quiet machine): a broken import must fail here."""
    names = [m.name for m in pkgutil.iter_modules(bench_package.__path__)]
    assert {"run", "phases", "link", "fleet", "probe", "mesh"} <= set(names)
    for name in names:
        importlib.import_module(f"replimesh.bench.{name}")


def test_the_link_cap_is_a_token_bucket_at_the_rate_with_a_bucket_of_at_least_64_kib():
    argv = tbf_argv("eth0", 200)
    assert argv[:7] == ["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf"]
    assert argv[argv.index("rate") + 1] == "200mbit"
    assert int(argv[argv.index("burst") + 1]) == 250_000  # 10 ms at 200 Mbit/s
    assert burst_bytes(10) == 64 * 1024
    for bad in (0, -5, True, 200_000, 2.5):
        with pytest.raises(ValueError, match="--link-mbit"):
            tbf_argv("eth0", bad)  # type: ignore[arg-type]


def test_a_series_not_measured_gives_null_keys_and_unknown_verdicts():
    raw = {k: v for k, v in GOOD.items() if not k.startswith("watch")}
    doc = build(raw, {"watch_full_small_s": "watch mode is not in this checkout"}, {"date": "today"})
    assert doc["small_file_all_nodes_median_s"] is None
    assert doc["idle_cpu_percent_per_node"] is None
    by_name = {t["name"]: t["met"] for t in doc["targets"]}
    assert by_name["small file, full mesh vs Syncthing default"] is None
    assert by_name["no-change full round, runner vs bare unison"] is True
    assert check(doc) == []
    json.dumps(doc)  # the document is plain JSON


def test_check_names_missing_keys_and_unexplained_nulls():
    doc = build(GOOD, {}, {})
    assert check(doc) == []
    del doc["large_file_all_nodes_s"]
    doc["syncthing_large_file_all_nodes_s"] = None
    problems = check(doc)
    assert "missing key large_file_all_nodes_s" in problems
    assert any("syncthing_large_file_all_nodes_s is null" in p for p in problems)


def test_results_md_shows_machine_figures_series_and_verdicts():
    meta = {
        "date": "2026-11-25 20:00 UTC",
        "command": ".venv/bin/meshctl bench --nodes 8",
        "machine": {"cpu": "Test CPU, 2 cores", "load average (1/5/15 min) at start": "1.00 / 2.00 / 3.00"},
        "versions": {"syncthing": "syncthing v1.19.2", "unison": "unison version 2.52.1"},
        "reasons": {"large file, one hop vs raw ssh cat": "Unison hashes the file on both sides."},
        "commands": ["node1# ssh cat"],
    }
    raw = {**GOOD, "replimesh_hop_s": [3.0]}
    text = render(build(raw, {"watch_overlay_small_s": "a reason"}, meta))
    assert ".venv/bin/meshctl bench --nodes 8" in text
    assert "Test CPU, 2 cores" in text and "1.00 / 2.00 / 3.00" in text
    assert "syncthing v1.19.2" in text
    for key in KEYS:
        assert f"`{key}`" in text
    assert (
        "| large file, one hop vs raw ssh cat | >= 70 % of raw ssh throughput (the same cipher) | "
        "0.5 x of ssh | **missed** |" in text
    )
    assert "Unison hashes the file on both sides." in text
    assert (
        "| 1 KiB on node1 -> identical on all nodes, replimesh watch, full mesh | 5 | 0.4 | 0.5 | 0.7 |"
        in text
    )
    assert "`watch_overlay_small_s`: a reason" in text


def test_syncthing_config_is_a_closed_full_mesh_of_the_lab():
    devices = [Device(f"node{i}", f"ID{i}", f"172.31.160.{10 + i}") for i in (1, 2, 3)]
    text = configure((FIXTURES / "syncthing-config.xml").read_text(), "node1", devices, 1)
    root = ET.fromstring(text)
    nodes = {d.get("name"): d.find("address").text for d in root.findall("device")}
    assert nodes == {
        "node1": "dynamic",
        "node2": "tcp://172.31.160.12:22000",
        "node3": "tcp://172.31.160.13:22000",
    }
    (folder,) = root.findall("folder")
    assert (folder.get("id"), folder.get("path"), folder.get("fsWatcherDelayS")) == (FOLDER_ID, FOLDER, "1")
    assert [d.get("id") for d in folder.findall("device")] == ["ID1", "ID2", "ID3"]
    assert folder.find("markerName").text == ".stfolder"  # the defaults' settings are kept
    options = root.find("options")
    for name, value in OPTIONS_OFF.items():
        assert [e.text for e in options.findall(name)] == [value], name
    assert options.find("listenAddress").text == "tcp://0.0.0.0:22000"
    assert root.find("gui/address").text == "127.0.0.1:8384"
    assert root.find("gui/apikey").text == "bench-test-key"


def test_syncthing_default_config_keeps_the_default_watcher_delay():
    devices = [Device("node1", "ID1", "172.31.160.11")]
    root = ET.fromstring(configure((FIXTURES / "syncthing-config.xml").read_text(), "node1", devices))
    assert root.find("folder").get("fsWatcherDelayS") == "10"


def test_a_target_not_measured_says_which_series_is_missing_and_why():
    raw = {k: v for k, v in GOOD.items() if k != "watch_large_s"}
    doc = build(raw, {"watch_large_s": "watch mode is not in this checkout"}, {})
    (large,) = [t for t in doc["targets"] if t["name"] == "large file on all nodes vs Syncthing"]
    assert large["met"] is None
    assert large["note"] == "watch_large_s: watch mode is not in this checkout"
    assert "not measured (watch_large_s: watch mode is not in this checkout)" in render(doc)


def test_reasons_quote_the_run_and_rerender_keeps_the_figures(tmp_path):
    doc = build(GOOD, {}, {"date": "today"})
    results = tmp_path / "results.json"
    results.write_text(json.dumps(doc))
    text = rerender(results).read_text()
    assert "`small_file_all_nodes_median_s` | 0.5 |" in text
    why = explain(GOOD)["large file, one hop vs raw ssh cat"]
    assert "1.50 s" in why and "2.00 s" in why  # the medians of this run's ssh and hop series
    assert "12.10 s against 10.85 s" in why  # and of the capped hop
    # Two MD5 passes of 0.75 s beside a 1.5 s transfer: no Unison hop can pass 1.5 / 3.0 of raw ssh.
    assert "0.75 s each on these hosts" in why and "to 0.50 of raw ssh here" in why
    # What the run was asked for stays with the figures: the capped floor (7 copies of 256 MiB at
    # 200 Mbit/s) is quoted again when RESULTS.md is made anew.
    raw = {**GOOD, "large_bytes": 256 * 2**20, "nodes": 8, "watch_capped_large_s": [90.0]}  # missed
    results.write_text(json.dumps(build(raw, {}, {"date": "today"})))
    assert (
        "3 rounds, each one whole copy over a capped link: 32.21 s at the least"
        in rerender(results).read_text()
    )


def test_reasons_weigh_the_cpu_the_hosts_spent_against_the_cores():
    raw = {
        **GOOD,
        "nodes": 8,
        "cores": 2,
        "watch_large_s": [12.0],  # missed
        "watch_large_cpu_s": [21.0, 22.0, 23.0],
        "syncthing_large_cpu_s": [14.0],
        "replimesh_hop_cpu_s": [3.1],
        "ssh_hop_cpu_s": [1.2],
    }
    why = explain(raw)
    large = why["large file on all nodes vs Syncthing"]
    # 22 CPU seconds for 7 copies; on 2 cores that alone is 11 s, more than Syncthing's 9 s run.
    assert "spent 22.0 CPU seconds with replimesh (3.14 a copy) against 14.0 with Syncthing" in large
    assert "on this machine's 2 cores replimesh's work alone needs 11.00 s, more than Syncthing's" in large
    assert "two MD5 fingerprints of each new copy (one on each end) are 1.50 of those CPU seconds" in large
    assert "spent 3.10 CPU seconds on the hop, 1.20 on raw ssh" in why["large file, one hop vs raw ssh cat"]
    # Not measured (an older results.json): the reason says nothing about CPU rather than guess.
    assert "CPU" not in explain(GOOD)["large file on all nodes vs Syncthing"]
    # The capped floor at raw ssh's own pace: 3 rounds of its capped hop (median 10.85 s).
    capped = explain({**raw, "watch_capped_large_s": [40.0]})
    assert (
        "32.55 s at the pace of raw ssh's own capped hop"
        in capped["large file on all nodes vs Syncthing, link capped at 200 Mbit/s"]
    )
