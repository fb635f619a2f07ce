"""The collection replimesh.mesh as Ansible's own tools see it: built from this checkout, installed into a
clean directory, read by ansible-doc, and passed by `ansible-test sanity` (docs, argument specs, imports,
pylint, pep8, yamllint, ...) with no error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.release import __version__ as ansible_version

from replimesh.collection_build import build

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TREE = ROOT / "collections" / "ansible_collections" / "replimesh" / "mesh"
MODULES = sorted(path.stem for path in (ROOT / "mesh_plugins" / "modules").glob("mesh_*.py"))
# ansible-test's venvs and pip downloads, kept between runs (a fresh clone starts without them).
ANSIBLE_TEST_HOME = ROOT / ".cache" / "ansible-test-home"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of an operator outside this checkout: no ANSIBLE_* setting of ours."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    return env | {"PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]), **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built collection installed by ansible-galaxy into an empty directory; its collections root."""
    work = tmp_path_factory.mktemp("collection")
    tarball = build(work / "dist")
    proc = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(work / "collections"), str(tarball)],
        cwd=work,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "replimesh.mesh:" in proc.stdout, proc.stdout
    return work / "collections"


def test_the_tarball_holds_the_real_files_and_no_link(installed: Path) -> None:
    tree = installed / "ansible_collections" / "replimesh" / "mesh"
    links = [str(path) for path in tree.rglob("*") if path.is_symlink()]
    assert links == []
    node = "roles/mesh_sync/files/replimesh_node"
    for shipped in ("plugins/modules/mesh_sync.py", f"{node}/mesh_runner.py", f"{node}/mesh_edgerecord.py",
                    "playbooks/bootstrap.yml"):  # fmt: skip
        assert (tree / shipped).read_bytes() == (TREE / shipped).read_bytes(), shipped
    assert not list(tree.rglob("molecule")) and not list(tree.rglob("__pycache__"))


@pytest.mark.parametrize(
    ("kind", "name"), [*(("module", m) for m in MODULES), ("inventory", "replimesh_mesh")]
)
def test_ansible_doc_reads_every_plugin_of_the_installed_collection(
    installed: Path, kind: str, name: str
) -> None:
    proc = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", kind, f"replimesh.mesh.{name}"],
        cwd=installed,
        env=clean_env(ANSIBLE_COLLECTIONS_PATH=str(installed)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"replimesh.mesh.{name}" in proc.stdout and "OPTIONS" in proc.stdout, proc.stdout[:2000]
    assert "WARNING" not in proc.stderr, proc.stderr


def _seed_pip_bootstrap(home: Path) -> None:
    """ansible-test puts pip into its venvs with get-pip.py from a host a closed network may not reach; it
    takes a copy from its cache when there is one (its documented way out): ours, get_pip.py."""
    import ansible_test

    source = Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
    version = re.search(r"pip='([0-9.]+)'", source.read_text())
    assert version, f"no pip version in {source}"
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("get_pip.py"), cache / f"get_pip_{version[1].replace('.', '_')}.py")


def test_ansible_test_sanity_passes_with_no_error(installed: Path) -> None:
    tree = installed / "ansible_collections" / "replimesh" / "mesh"
    core = ".".join(ansible_version.split(".")[:2])
    assert (tree / "tests" / "sanity" / f"ignore-{core}.txt").is_file(), (
        f"no tests/sanity/ignore-{core}.txt for ansible-core {core}: copy the newest one and run again"
    )
    # ansible-test lists a collection's files with git when it is a repository (else it reads its own output).
    for argv in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", *argv], cwd=tree, check=True, timeout=60)
    _seed_pip_bootstrap(ANSIBLE_TEST_HOME)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    proc = subprocess.run(
        [str(BIN / "ansible-test"), "sanity", "--python", python, "--color", "no"],
        cwd=tree,
        env=clean_env(HOME=str(ANSIBLE_TEST_HOME)),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    errors = [
        line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(("ERROR", "FATAL"))
    ]
    assert proc.returncode == 0 and not errors, "\n".join(errors) or proc.stderr[-3000:]
    ran = re.findall(r'^Running sanity test "([a-z0-9-]+)"', proc.stdout, re.MULTILINE)
    assert {"validate-modules", "ansible-doc", "import", "pylint", "yamllint", "runtime-metadata"} <= set(
        ran
    ), ran


def test_meshctl_without_the_collection_says_what_to_install(tmp_path: Path) -> None:
    """meshctl's package alone (as a wheel installs it, no collection anywhere Ansible looks): --version
    works, a command that needs the collection says what to install and exits 3, with no traceback."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "replimesh", site / "replimesh", ignore=shutil.ignore_patterns("bench"))
    env = clean_env(HOME=str(tmp_path), ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "empty"))
    (tmp_path / "site.mesh.yml").write_text("plugin: replimesh.mesh.replimesh_mesh\n")

    def meshctl(*args: str) -> subprocess.CompletedProcess[str]:
        code = f"import sys; sys.path.insert(0, {str(site)!r}); from replimesh.cli import main; main()"
        return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    assert meshctl("--version").returncode == 0
    proc = meshctl("status", "-i", "site.mesh.yml")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("meshctl: error: the Ansible collection replimesh.mesh is not installed")
    assert "Traceback" not in proc.stderr
