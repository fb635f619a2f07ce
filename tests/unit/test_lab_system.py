"""replimesh.lab.system: the lock that every lab on this machine takes before it changes what they share."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from replimesh.lab import system
from replimesh.lab.errors import LabError


@pytest.fixture
def lock_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(system, "RUN_DIR", tmp_path)
    monkeypatch.setattr(system, "SHARED_LOCK", tmp_path / "lab.lock")
    return tmp_path


def test_a_second_holder_waits_for_the_first(lock_in: Path) -> None:
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with system.shared_lock():
            held.set()
            order.append("first in")
            time.sleep(0.3)  # the first holder's work
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(5)
    with system.shared_lock(timeout=10):
        order.append("second in")
    thread.join(5)
    assert order == ["first in", "first out", "second in"]


def test_a_lock_held_too_long_is_a_clear_error(lock_in: Path) -> None:
    with (
        system.shared_lock(),
        pytest.raises(LabError, match=r"lab\.lock still held after 0s"),
        system.shared_lock(timeout=0.3),
    ):
        pass  # pragma: no cover - never entered
    with system.shared_lock(timeout=1):  # released on the error path too
        pass


def test_the_session_labs_tests_are_one_work_unit_and_own_labs_are_not() -> None:
    from tests.conftest import work_unit

    assert work_unit("tests/e2e/test_faults.py::test_a[x]") == "session-lab"
    assert work_unit("tests/integration/test_lab.py::test_b") == "session-lab"
    assert work_unit("tests/e2e/test_overlay.py::test_c") == "tests/e2e/test_overlay.py"
    assert work_unit("tests/molecule/test_roles.py::test_d[unison]") == "tests/molecule/test_roles.py"
    assert work_unit("tests/unit/test_lab_system.py::test_e") == "tests/unit/test_lab_system.py"
