"""Each role's Molecule scenario on real lab hosts: converge, a second converge with no change, verify.

The scenarios (roles/<role>/molecule/default) bring up their own lab (rmmol, 172.31.81.0/24, see
molecule/lab.py), so they run beside the session's lab and never touch it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from tests.conftest import ROOT, TEST_SLOT, VENV_BIN

TIMEOUT = 900
ROLES = ("unison", "mesh_ssh", "mesh_sync")


class MoleculeTimeout(AssertionError):
    """molecule ran too long and was ended: its destroy step never ran."""


def _molecule(role: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run molecule in the role's directory; on timeout end its whole process group, then raise."""
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
        "PY_COLORS": "0",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    if TEST_SLOT:
        # Molecule keeps a scenario's state under $XDG_CACHE_HOME/molecule/<role>: one per slot.
        env["XDG_CACHE_HOME"] = f"/tmp/replimesh-molecule-cache-{TEST_SLOT}"
    with subprocess.Popen(
        [str(VENV_BIN / "molecule"), *args],
        cwd=ROOT / "roles" / role,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group: a timeout ends ansible-playbook and ssh too
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            message = f"molecule {' '.join(args)} ({role}) ran over {timeout:.0f}s:\n{out[-6000:]}"
            raise MoleculeTimeout(message) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def _step_passed(output: str, step: str) -> bool:
    return re.search(rf"^INFO\s+\[default > {step}\] Executed: Successful$", output, re.MULTILINE) is not None


@pytest.mark.lab
@pytest.mark.parametrize("role", ROLES)
def test_role_converges_idempotently_and_verifies(role: str) -> None:
    try:
        proc = _molecule(role, "test", "-s", "default", timeout=TIMEOUT)
    except MoleculeTimeout:
        _molecule(role, "destroy", "-s", "default", timeout=300)  # the ended run left its lab up
        raise
    tail = proc.stdout[-8000:]
    assert proc.returncode == 0, f"molecule test ({role}) exited {proc.returncode}:\n{tail}"
    assert "Idempotence test failed" not in proc.stdout, tail
    assert _step_passed(proc.stdout, "idempotence"), f"no passed idempotence step ({role}):\n{tail}"
    assert _step_passed(proc.stdout, "verify"), f"no passed verify step ({role}):\n{tail}"
