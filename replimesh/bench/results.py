"""What results.json holds: the issues' keys, the series behind them, and each target's verdict.

`build` turns the raw series a run measured into the results document; a series that could not be
measured is None in its key and named, with the reason, under `not_measured`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from replimesh.bench.stats import mean, median, ratio, summary

# The keys the issues ask for, in their order (issue 6's twelve, then issue 17's five).
KEYS = (
    "small_file_all_nodes_median_s",
    "syncthing_default_small_file_all_nodes_median_s",
    "syncthing_fast_small_file_all_nodes_median_s",
    "large_file_throughput_ratio_vs_ssh",
    "large_file_all_nodes_s",
    "syncthing_large_file_all_nodes_s",
    "idle_cpu_percent_per_node",
    "syncthing_idle_cpu_percent_per_node",
    "idle_rss_mib_per_node",
    "syncthing_idle_rss_mib_per_node",
    "nochange_round_100k_files_s",
    "bare_unison_nochange_100k_files_s",
    "capped_large_file_all_nodes_s",
    "syncthing_capped_large_file_all_nodes_s",
    "overlay_small_file_all_nodes_median_s",
    "bootstrap_16_first_s",
    "bootstrap_16_rerun_s",
)
FLEET = 16  # the provisioning keys are for this many hosts

# Raw series (lists of seconds) a run may produce; idle figures are per-node lists under *_idle.
SERIES = (
    "ssh_hop_s",
    "replimesh_hop_s",
    "syncthing_default_small_s",
    "syncthing_fast_small_s",
    "syncthing_large_s",
    "watch_full_small_s",
    "watch_overlay_small_s",
    "watch_large_s",
    "nochange_runner_s",
    "nochange_bare_s",
    "tree_first_sync_s",
    "pair_empty_small_s",
    "pair_tree_small_s",
    "ssh_hop_aes128_gcm_s",
    "ssh_hop_chacha20_s",
    "md5_large_s",
    "syncthing_capped_large_s",
    "watch_capped_large_s",
    "ssh_capped_hop_s",
    "replimesh_capped_hop_s",
    "bootstrap_first_s",
    "bootstrap_rerun_s",
    "bootstrap_first_tasks",  # tasks that ran on a host (Ansible's ok count), not seconds
    "bootstrap_rerun_tasks",
    # CPU seconds the hosts spent in those trials (every process in their containers, the bench's own
    # pollers left out): on a machine with few cores, work that no ordering of the runs can hide.
    "ssh_hop_cpu_s",
    "replimesh_hop_cpu_s",
    "syncthing_large_cpu_s",
    "watch_large_cpu_s",
    "ssh_capped_hop_cpu_s",
    "replimesh_capped_hop_cpu_s",
    "syncthing_capped_large_cpu_s",
    "watch_capped_large_cpu_s",
)
# bootstrap.yml's first run must take at most this long on the fleet, its no-change re-run this long.
BOOTSTRAP_FIRST_MAX_S = 180.0
BOOTSTRAP_RERUN_MAX_S = 60.0
IDLE = ("baseline_idle", "syncthing_idle", "watch_idle")
# What a run was asked for, kept with its figures (the reasons quote them when RESULTS.md is made anew).
PARAMS = ("link_mbit", "large_bytes", "nodes", "fleet_hosts", "cores")

# "About the same time" for the watch path in a big tree: at most this much slower than in an empty one
# (relative), or this many seconds, whichever allows more (a few tenths are run-to-run noise here).
TREE_SLOWDOWN_MAX = 1.5
TREE_SLACK_S = 0.5


@dataclass(frozen=True)
class Target:
    name: str
    rule: str
    measured: str
    met: bool | None
    series: tuple[str, ...] = ()  # the raw series it compares (to say which one was not measured)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "series": list(self.series)}


def _fmt(value: float | None, unit: str = "s") -> str:
    return "—" if value is None else f"{value:g} {unit}".strip()


def headline(raw: Mapping[str, Any]) -> dict[str, float | None]:
    """The keys from the raw series."""

    def idle(name: str, field: str) -> float | None:
        per_node = (raw.get(name) or {}).get(field) or []
        return mean(per_node)

    def fleet(name: str) -> float | None:
        return median(raw.get(name) or []) if raw.get("fleet_hosts") == FLEET else None

    return {
        "small_file_all_nodes_median_s": median(raw.get("watch_full_small_s") or []),
        "syncthing_default_small_file_all_nodes_median_s": median(raw.get("syncthing_default_small_s") or []),
        "syncthing_fast_small_file_all_nodes_median_s": median(raw.get("syncthing_fast_small_s") or []),
        "large_file_throughput_ratio_vs_ssh": ratio(
            median(raw.get("ssh_hop_s") or []), median(raw.get("replimesh_hop_s") or [])
        ),
        "large_file_all_nodes_s": median(raw.get("watch_large_s") or []),
        "syncthing_large_file_all_nodes_s": median(raw.get("syncthing_large_s") or []),
        "idle_cpu_percent_per_node": idle("watch_idle", "cpu_percent"),
        "syncthing_idle_cpu_percent_per_node": idle("syncthing_idle", "cpu_percent"),
        "idle_rss_mib_per_node": idle("watch_idle", "rss_mib"),
        "syncthing_idle_rss_mib_per_node": idle("syncthing_idle", "rss_mib"),
        "nochange_round_100k_files_s": median(raw.get("nochange_runner_s") or []),
        "bare_unison_nochange_100k_files_s": median(raw.get("nochange_bare_s") or []),
        "capped_large_file_all_nodes_s": median(raw.get("watch_capped_large_s") or []),
        "syncthing_capped_large_file_all_nodes_s": median(raw.get("syncthing_capped_large_s") or []),
        "overlay_small_file_all_nodes_median_s": median(raw.get("watch_overlay_small_s") or []),
        "bootstrap_16_first_s": fleet("bootstrap_first_s"),
        "bootstrap_16_rerun_s": fleet("bootstrap_rerun_s"),
    }


def _judge(rule: Callable[..., bool], *figures: float | None) -> bool | None:
    """The rule applied to the figures; None when one of them was not measured."""
    return None if any(f is None for f in figures) else bool(rule(*figures))


def _small_file_targets(
    label: str, mine: float | None, series: str, head: Mapping[str, float | None]
) -> list[Target]:
    default = head["syncthing_default_small_file_all_nodes_median_s"]
    fast = head["syncthing_fast_small_file_all_nodes_median_s"]
    return [
        Target(
            f"small file, {label} vs Syncthing default",
            "median <= 1/10 of Syncthing's default",
            f"{_fmt(mine)} vs {_fmt(default)}: {_fmt(ratio(default, mine), 'x')} faster",
            _judge(lambda m, d: m * 10 <= d, mine, default),
            series=(series, "syncthing_default_small_s"),
        ),
        Target(
            f"small file, {label} vs Syncthing fsWatcherDelayS=1",
            "median below Syncthing's",
            f"{_fmt(mine)} vs {_fmt(fast)}",
            _judge(lambda m, f: m < f, mine, fast),
            series=(series, "syncthing_fast_small_s"),
        ),
    ]


def targets(head: Mapping[str, float | None], raw: Mapping[str, Any]) -> list[Target]:
    """Each target of the issue, as a ratio of two figures of the same run, with its verdict."""
    overlay = head["overlay_small_file_all_nodes_median_s"]
    hop = head["large_file_throughput_ratio_vs_ssh"]
    capped_hop = ratio(
        median(raw.get("ssh_capped_hop_s") or []), median(raw.get("replimesh_capped_hop_s") or [])
    )
    capped, st_capped = head["capped_large_file_all_nodes_s"], head["syncthing_capped_large_file_all_nodes_s"]
    first, rerun = head["bootstrap_16_first_s"], head["bootstrap_16_rerun_s"]
    mbit = raw.get("link_mbit") or "M"
    large, st_large = head["large_file_all_nodes_s"], head["syncthing_large_file_all_nodes_s"]
    cpu, st_cpu = head["idle_cpu_percent_per_node"], head["syncthing_idle_cpu_percent_per_node"]
    rss, st_rss = head["idle_rss_mib_per_node"], head["syncthing_idle_rss_mib_per_node"]
    nochange, bare = head["nochange_round_100k_files_s"], head["bare_unison_nochange_100k_files_s"]
    empty, tree = median(raw.get("pair_empty_small_s") or []), median(raw.get("pair_tree_small_s") or [])
    return [
        *_small_file_targets("full mesh", head["small_file_all_nodes_median_s"], "watch_full_small_s", head),
        *_small_file_targets("overlay", overlay, "watch_overlay_small_s", head),
        Target(
            "large file, one hop vs raw ssh cat",
            ">= 70 % of raw ssh throughput (the same cipher)",
            f"{_fmt(hop, 'x')} of ssh",
            _judge(lambda h: h >= 0.7, hop),
            series=("replimesh_hop_s", "ssh_hop_s"),
        ),
        Target(
            f"large file, one hop vs raw ssh cat, link capped at {mbit} Mbit/s",
            ">= 70 % of raw ssh throughput (the same cipher)",
            f"{_fmt(capped_hop, 'x')} of ssh",
            _judge(lambda h: h >= 0.7, capped_hop),
            series=("replimesh_capped_hop_s", "ssh_capped_hop_s"),
        ),
        Target(
            "large file on all nodes vs Syncthing",
            "sooner than Syncthing",
            f"{_fmt(large)} vs {_fmt(st_large)}",
            _judge(lambda m, s: m < s, large, st_large),
            series=("watch_large_s", "syncthing_large_s"),
        ),
        Target(
            f"large file on all nodes vs Syncthing, link capped at {mbit} Mbit/s",
            "sooner than Syncthing",
            f"{_fmt(capped)} vs {_fmt(st_capped)}",
            _judge(lambda m, s: m < s, capped, st_capped),
            series=("watch_capped_large_s", "syncthing_capped_large_s"),
        ),
        Target(
            "idle CPU per node vs Syncthing",
            "no more than an idle Syncthing node",
            f"{_fmt(cpu, '%')} vs {_fmt(st_cpu, '%')}",
            _judge(lambda m, s: m <= s, cpu, st_cpu),
            series=("watch_idle", "syncthing_idle"),
        ),
        Target(
            "idle memory per node vs Syncthing",
            "less than half of Syncthing's",
            f"{_fmt(rss, 'MiB')} vs {_fmt(st_rss, 'MiB')}: {_fmt(ratio(rss, st_rss), 'x')}",
            _judge(lambda m, s: m * 2 < s, rss, st_rss),
            series=("watch_idle", "syncthing_idle"),
        ),
        Target(
            "no-change full round, runner vs bare unison",
            "within 10 % of a bare unison run",
            f"{_fmt(nochange)} vs {_fmt(bare)}: {_fmt(ratio(nochange, bare), 'x')}",
            _judge(lambda m, b: m <= b * 1.10, nochange, bare),
            series=("nochange_runner_s", "nochange_bare_s"),
        ),
        Target(
            "one-file change in the big tree vs an empty tree (watch path)",
            f"<= {TREE_SLOWDOWN_MAX:g}x or + {TREE_SLACK_S:g} s of the empty tree's median",
            f"{_fmt(tree)} vs {_fmt(empty)}",
            _judge(lambda t, e: t <= max(e * TREE_SLOWDOWN_MAX, e + TREE_SLACK_S), tree, empty),
            series=("pair_tree_small_s", "pair_empty_small_s"),
        ),
        _at_most(
            f"bootstrap.yml on {FLEET} hosts, first run", first, BOOTSTRAP_FIRST_MAX_S, "bootstrap_first_s"
        ),
        _at_most(
            f"bootstrap.yml on {FLEET} hosts, no-change re-run",
            rerun,
            BOOTSTRAP_RERUN_MAX_S,
            "bootstrap_rerun_s",
        ),
    ]


def _at_most(name: str, seconds: float | None, limit: float, series: str) -> Target:
    return Target(
        name, f"<= {limit:g} s", _fmt(seconds), _judge(lambda s: s <= limit, seconds), series=(series,)
    )


def _explain(target: Target, not_measured: Mapping[str, str]) -> Target:
    """A target that could not be judged says which of its series is missing, and why."""
    if target.met is not None:
        return target
    gaps = [
        f"{name}: {not_measured.get(name, 'no figure')}" for name in target.series if name in not_measured
    ]
    return replace(target, note="; ".join(gaps) or "a figure is missing")


def build(raw: Mapping[str, Any], not_measured: Mapping[str, str], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The results document: the keys first, then targets, series summaries, gaps and meta."""
    head = headline(raw)
    series = {name: summary(raw.get(name) or []) for name in SERIES}
    idle = {name: raw[name] for name in IDLE if raw.get(name)}
    return {
        **head,
        "targets": [_explain(t, not_measured).as_dict() for t in targets(head, raw)],
        "series": series,
        "idle": idle,
        "not_measured": dict(not_measured),
        "params": {name: raw[name] for name in PARAMS if name in raw},
        "meta": dict(meta),
    }


def check(document: Mapping[str, Any]) -> list[str]:
    """What is wrong with a results document (missing keys, a key that is neither a number nor None)."""
    problems = [f"missing key {key}" for key in KEYS if key not in document]
    for key in KEYS:
        value = document.get(key)
        if key in document and value is not None and not isinstance(value, int | float):
            problems.append(f"{key} is {type(value).__name__}, not a number")
        if key in document and value is None and not document.get("not_measured"):
            problems.append(f"{key} is null but not_measured gives no reason")
    return problems
