"""Shared fixtures: one lab of real SSH hosts for the whole session, always torn down at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from replimesh.lab.lab import Host, Lab, LabConfig
from tests.reliability import stamp_outcome

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# The test labs have their own names and /24s, so they never collide with a demo lab (`.lab/`,
# 172.31.77.0/24) or with each other (the suite's two workers run labs side by side): offsets 0-7, one
# per role. REPLIMESH_TEST_SLOT=N (1-6) moves every lab of a run to its own names and subnets
# (172.31.(28+8(N-1)+offset).0/24; slot 0 is 172.31.(78+offset).0/24), so two runs of the suite (two work
# trees) can share one Docker engine.
TEST_SLOT = int(os.environ.get("REPLIMESH_TEST_SLOT", "0"))
if not 0 <= TEST_SLOT <= 6:
    raise SystemExit(f"REPLIMESH_TEST_SLOT must be 0..6, not {TEST_SLOT}")


LAB_OFFSETS = 8  # test, down, nobody, mol, ovl, upg, pre, mbr


def slot_lab_config(role: str, offset: int) -> LabConfig:
    """The lab a test run uses for `role` (test, down, nobody, ...): slot 0 keeps the historic names."""
    if not 0 <= offset < LAB_OFFSETS:
        raise ValueError(f"a lab's offset is 0..{LAB_OFFSETS - 1}, not {offset}")
    if TEST_SLOT == 0:
        return LabConfig(name=f"rm{role}", subnet=f"172.31.{78 + offset}.0/24")
    subnet = f"172.31.{28 + LAB_OFFSETS * (TEST_SLOT - 1) + offset}.0/24"
    return LabConfig(name=f"rm{role}{TEST_SLOT}", subnet=subnet)


TEST_LAB = slot_lab_config("test", 0)
# The hosts of a test lab that boot systemd as PID 1, as a VM or a server does (a timer runs their rounds,
# a unit their watcher); the others are bare containers with no init system (cron, a supervisor). Every
# scenario on the shared mesh runs on both kinds at once.
SYSTEMD_NODES = ("node5",)


class SessionLab:
    """The session's lab: grows on demand, never shrinks, is removed at the end of the run."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def ensure(self, count: int) -> list[Host]:
        hosts = self.lab.hosts()
        if len(hosts) < count:
            hosts = self.lab.up(count, systemd=SYSTEMD_NODES)
        return hosts[:count]

    def sh(self, node: str, script: str, check: bool = True) -> str:
        proc = self.lab.exec(node, ["sh", "-c", script], timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{node}: {script!r} exited {proc.returncode}: {proc.stderr.decode()}")
        return proc.stdout.decode()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionLab]:
    state = tmp_path_factory.mktemp("lab")
    the_lab = Lab(state, TEST_LAB, log=lambda msg: print(f"[lab] {msg}", file=sys.stderr))
    try:
        yield SessionLab(the_lab)
    finally:
        the_lab.down()


def tool(name: str) -> str:
    """A console script of this venv (ansible, ansible-playbook, meshctl)."""
    return str(VENV_BIN / name)


def run_tool(name: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None,
             check: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
    proc = subprocess.run(
        [tool(name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", **(env or {})},
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{name} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.5) -> object:
    """Poll `predicate` until it returns something truthy, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Stamp the reliability records a test made (tests/reliability.py) with its outcome and duration."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        stamp_outcome(item.nodeid, "passed" if report.passed else "failed", report.duration)


# `make test` runs two pytest-xdist workers. Every test of the session's lab goes to one worker, in order
# (one lab, one bootstrap, tests that reset it in turn); every other module is a unit of its own (its own
# lab, as overlay, upgrade and molecule have, or none), run by the other worker meanwhile. The controller
# schedules by node id alone (it collects nothing), hence the path rule; pytest_itemcollected checks it
# against each test's fixtures in the workers.
SESSION_LAB_DIRS = ("tests/e2e/", "tests/integration/")
OWN_LAB_MODULES = frozenset(
    {
        "tests/e2e/test_overlay.py",
        "tests/e2e/test_upgrade.py",
        "tests/e2e/test_preflight.py",
        "tests/e2e/test_membership.py",
    }
)


def work_unit(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    if module.startswith(SESSION_LAB_DIRS) and module not in OWN_LAB_MODULES:
        return "session-lab"
    return module


def _uses_session_lab(item: pytest.Item) -> bool:
    """Whether the test gets this file's session-scoped `lab` (a module may define its own `lab`)."""
    info = getattr(item, "_fixtureinfo", None)
    chain = info.name2fixturedefs.get("lab", ()) if info else ()
    return bool(chain) and chain[-1].scope == "session"


def pytest_itemcollected(item: pytest.Item) -> None:
    if _uses_session_lab(item) and work_unit(item.nodeid) != "session-lab":
        raise pytest.UsageError(
            f"{item.nodeid} uses the session's lab but work_unit() would run it beside that lab's other"
            " tests on another worker: add its module to SESSION_LAB_DIRS (tests/conftest.py)"
        )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class LabScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return LabScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that leave the session's mesh re-shaped (marked `reshapes_mesh`) run last: the mesh is
    re-bootstrapped once between them instead of after each, and not at all after the last."""
    items.sort(key=lambda item: item.get_closest_marker("reshapes_mesh") is not None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-minutes",
        type=float,
        default=None,
        help="minutes of the e2e soak test (default 5, or REPLIMESH_SOAK_MINUTES)",
    )
