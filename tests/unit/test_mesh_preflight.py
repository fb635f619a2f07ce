"""The preflight's checks (module_utils/mesh_preflight.py): what stops bootstrap before any change."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_preflight import (
    UNSET_LOGINUID,
    bind_mount_problem,
    cron_masters,
    cron_problem,
    free_space_problems,
    has_capability,
    pam_requires_loginuid,
    sshd_include_problem,
    unresolved_peers,
)

DEBIAN_SSHD = """# This is the sshd server system-wide configuration file.
Include /etc/ssh/sshd_config.d/*.conf
KbdInteractiveAuthentication no
UsePAM yes
Subsystem sftp /usr/lib/openssh/sftp-server
"""
DEBIAN_PAM_CRON = """# The PAM configuration file for the cron daemon
@include common-auth
# Sets the loginuid process attribute
session    required     pam_loginuid.so
@include common-session-noninteractive
"""
FULL_CAPS = "Name:\tcron\nCapEff:\t000001ffffffffff\n"
DOCKER_CAPS = "Name:\tcron\nCapEff:\t00000000a80425fb\n"  # docker's default set: no CAP_AUDIT_CONTROL


@pytest.mark.parametrize(
    "config",
    [
        DEBIAN_SSHD,
        DEBIAN_SSHD + "Match User backup\n  ForceCommand internal-sftp\n",
        "include sshd_config.d/*.conf\nMatch all\n",  # relative to /etc/ssh, any case
        'Include /etc/ssh/other.conf "/etc/ssh/sshd_config.d/*"\n',
    ],
)
def test_a_drop_in_included_before_any_match_passes(config: str) -> None:
    assert sshd_include_problem(config) is None


def test_an_include_after_a_match_is_refused_with_what_to_move() -> None:
    config = "Match User backup\n  ForceCommand internal-sftp\nInclude /etc/ssh/sshd_config.d/*.conf\n"
    problem = sshd_include_problem(config)
    assert (
        problem is not None and "Match block before any Include" in problem and "move the Include" in problem
    )


@pytest.mark.parametrize(
    "config", ["", "# Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n", "Include /etc/x/*\n"]
)
def test_no_include_of_the_drop_in_directory_is_refused(config: str) -> None:
    problem = sshd_include_problem(config)
    assert problem is not None and "does not include /etc/ssh/sshd_config.d/*.conf" in problem


def test_capabilities_and_the_pam_rule_are_read_as_the_kernel_and_pam_do() -> None:
    assert has_capability(FULL_CAPS, 30) and not has_capability(DOCKER_CAPS, 30)
    assert has_capability(DOCKER_CAPS, 21) is False and has_capability(FULL_CAPS, 21)
    assert not has_capability("Name:\tx\n", 30)
    assert pam_requires_loginuid(DEBIAN_PAM_CRON)
    assert not pam_requires_loginuid("session optional pam_loginuid.so\n")
    assert not pam_requires_loginuid("# session required pam_loginuid.so\n")
    assert pam_requires_loginuid("-session requisite /lib/security/pam_loginuid.so\n")


def test_cron_started_at_boot_runs_jobs() -> None:
    daemon = {"loginuid": str(UNSET_LOGINUID), "status": DOCKER_CAPS}
    assert cron_problem([daemon], None, DEBIAN_PAM_CRON, job_uid=998) is None


def test_a_root_job_cron_is_running_is_not_taken_for_the_daemon() -> None:
    """At 06:25 cron.daily starts (apt's part sleeps up to half an hour): the daemon's child running it has
    login uid 0 (pam_loginuid, root's job). Only the daemon says whether cron can run the mesh user's jobs."""
    daemon = {
        "loginuid": str(UNSET_LOGINUID),
        "status": f"Name:\tcron\nPPid:\t1\n{DOCKER_CAPS}",
        "name": "cron",
    }
    job = {"loginuid": "0", "status": f"Name:\tcron\nPPid:\t40\n{DOCKER_CAPS}", "name": "cron"}
    masters = cron_masters({"40": daemon, "4711": job})
    assert masters == [daemon]
    assert cron_problem(masters, None, DEBIAN_PAM_CRON, job_uid=998) is None
    assert cron_problem([daemon, job], None, DEBIAN_PAM_CRON, job_uid=998)  # what was judged before
    # A daemon an admin's login restarted is still refused, with or without a job running.
    restarted = {**daemon, "loginuid": "1000"}
    assert cron_problem(cron_masters({"40": restarted, "4711": job}), None, DEBIAN_PAM_CRON, job_uid=998)


def test_cron_started_from_a_login_in_a_container_runs_no_job() -> None:
    daemon = {"loginuid": "1000", "status": DOCKER_CAPS}
    problem = cron_problem([daemon], None, DEBIAN_PAM_CRON, job_uid=998)
    assert problem is not None and "login uid 1000" in problem and "never run" in problem
    # With the right to change it (a VM's root), or with the job's own uid, or without pam_loginuid: fine.
    assert cron_problem([{**daemon, "status": FULL_CAPS}], None, DEBIAN_PAM_CRON, job_uid=998) is None
    assert cron_problem([daemon], None, DEBIAN_PAM_CRON, job_uid=1000) is None
    assert cron_problem([daemon], None, "session optional pam_loginuid.so\n", job_uid=998) is None


def test_a_stopped_cron_is_judged_by_who_would_start_it() -> None:
    session = {"loginuid": "1000", "status": DOCKER_CAPS}  # the role starts it from this login
    problem = cron_problem([], session, DEBIAN_PAM_CRON, job_uid=998)
    assert problem is not None and "would be started from this login" in problem
    assert cron_problem([], None, DEBIAN_PAM_CRON, job_uid=998) is None  # systemd starts it


def test_free_space_is_judged_per_file_system_of_each_path_or_its_nearest_parent(tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    (tmp_path / "big").mkdir()

    class Stat:
        def __init__(self, free: int) -> None:
            self.f_bavail, self.f_frsize = free, 1

    sizes = {str(tmp_path / "small"): 10 * 2**20, str(tmp_path / "big"): 500 * 2**20}
    paths = [str(tmp_path / "small/folder/sub"), str(tmp_path / "small/other"), str(tmp_path / "big/state")]
    problems = free_space_problems(
        paths,
        200 * 2**20,
        statvfs=lambda p: Stat(sizes[p]),
        device=lambda p: hash(p),  # type: ignore[arg-type,return-value]
    )
    assert problems == [
        f"only 10 MiB free on the file system of {paths[0]} (needs 200 MiB): free some space, or lower "
        "mesh_preflight_min_free_mib"
    ]


def test_free_space_of_this_machine_is_read_for_real(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    assert free_space_problems([str(tmp_path / "missing/folder")], 1) == []
    assert len(free_space_problems([str(tmp_path), str(tmp_path / "x")], free + 2**40)) == 1


def test_a_peer_name_that_does_not_resolve_is_named_with_the_reason() -> None:
    def resolve(address: str) -> Sequence[str]:
        if address == "gone.lan":
            raise OSError(-2, "Name or service not known")
        return () if address == "empty.lan" else ("10.0.0.2",)

    peers = [{"name": "a", "address": "10.0.0.2"}, {"name": "b", "address": "gone.lan"},
             {"name": "c", "address": "empty.lan"}]  # fmt: skip
    problems = unresolved_peers(peers, resolve)
    assert [p.split(":")[0] for p in problems] == ["peer b", "peer c"]
    assert "Name or service not known" in problems[0] and "no address" in problems[1]


def test_the_bind_mount_probe_reports_the_refusal_and_leaves_nothing(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def refused(argv: Sequence[str]) -> tuple[int, str, str]:
        calls.append(list(argv))
        return 32, "", "mount: /tmp/x/target: permission denied.\n       dmesg(1) may have more info.\n"

    problem = bind_mount_problem(refused, str(tmp_path))
    assert problem is not None and "(permission denied)" in problem and "CAP_SYS_ADMIN" in problem
    assert [c[:2] for c in calls] == [["mount", "--rbind"]]
    assert list(tmp_path.iterdir()) == []


def test_the_bind_mount_probe_unmounts_what_it_mounted(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def allowed(argv: Sequence[str]) -> tuple[int, str, str]:
        calls.append(list(argv))
        return 0, "", ""

    assert bind_mount_problem(allowed, str(tmp_path)) is None
    assert [c[:2] for c in calls] == [["mount", "--rbind"], ["mount", "-o"], ["umount", "-R"]]
    assert "remount,bind,ro,nosuid,nodev" in calls[1]
    assert list(tmp_path.iterdir()) == []


def test_the_module_names_the_cron_daemons_that_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """mesh_sync installs and starts Debian's cron only where the preflight did not see it running."""
    import importlib

    from tests.unit.module_harness import PLUGINS, run_module

    module = importlib.import_module(f"{PLUGINS}.modules.mesh_preflight")
    proc = {"1": "init", "40": "cron", "41": "crond", "42": "cron", "43": "sshd"}
    files = {f"/proc/{pid}/comm": f"{name}\n" for pid, name in proc.items()}
    monkeypatch.setattr(module.os, "listdir", lambda path: [*proc, "self", "net"] if path == "/proc" else [])
    monkeypatch.setattr(module, "_read", lambda path: files.get(path, ""))
    skip = ["bind_mount", "sshd_include", "cron", "free_space", "resolve"]
    result = run_module(module, {"skip": skip})
    assert result["cron_daemons"] == ["cron", "crond"] and result["cron_running"] == 3
    proc.pop("40"), proc.pop("41"), proc.pop("42")
    assert run_module(module, {"skip": skip})["cron_daemons"] == []


def test_the_module_says_whether_the_watcher_is_alive(tmp_path: Path) -> None:
    """mesh_sync starts the watcher's supervisor only where the preflight did not see it alive."""
    import importlib
    import json
    import subprocess
    import sys
    import time
    from datetime import datetime

    from tests.conftest import wait_until
    from tests.unit.module_harness import PLUGINS, run_module

    module = importlib.import_module(f"{PLUGINS}.modules.mesh_preflight")
    skip = ["bind_mount", "sshd_include", "cron", "free_space", "resolve"]
    state = tmp_path / "state"
    args = {"skip": skip, "watch_state_dir": str(state)}
    assert run_module(module, args)["watcher_alive"] is False  # cron mode: no watcher expected
    (state / "watch").mkdir(parents=True)
    beat = datetime.fromtimestamp(time.time(), UTC).isoformat()
    record = {"pid": os.getpid(), "heartbeat": beat}  # this process is no watcher
    (state / "watch" / "watcher.json").write_text(json.dumps(record))
    assert run_module(module, args)["watcher_alive"] is False
    watcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "replimesh-watch"])
    try:
        cmdline = Path(f"/proc/{watcher.pid}/cmdline")
        assert wait_until(lambda: b"replimesh-watch" in cmdline.read_bytes(), 10)
        (state / "watch" / "watcher.json").write_text(json.dumps({**record, "pid": watcher.pid}))
        assert run_module(module, args)["watcher_alive"] is True
    finally:
        watcher.kill()
        watcher.wait(10)
