"""replimesh-jail-refresh (module_utils/mesh_jailbins.py): the jails' programs follow the node's packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_jailbins import (
    jail_sources,
    ldd_libraries,
    refresh_jails,
    refresh_template,
)

LDD = """\tlinux-vdso.so.1 (0x00007ffd5b9e6000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f2b7c5a0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2b7c3bf000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f2b7c6a4000)
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail's files are root's: run as root")


def test_ldd_output_gives_each_library_once_by_the_path_the_loader_opens() -> None:
    assert ldd_libraries(LDD + LDD) == [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ]


def test_a_program_goes_in_under_its_name_with_its_real_files_content(tmp_path: Path) -> None:
    real = tmp_path / "unison-2.52"
    real.write_bytes(b"unison 2.52")
    link = tmp_path / "unison"  # what the alternatives system makes of /usr/bin/unison
    link.symlink_to(real)
    lib = tmp_path / "libm.so.6"
    lib.write_bytes(b"libm")
    sources = jail_sources([str(link)], lambda path: f"\tlibm.so.6 => {lib} (0x1)\n")
    assert sources == {str(link): str(real), str(lib): str(lib)}


def build(tmp_path: Path) -> tuple[Path, Path, dict[str, str], Path]:
    host = tmp_path / "host"
    host.mkdir()
    (host / "unison").write_bytes(b"old build")
    (host / "libx.so").write_bytes(b"old lib")
    template, jails = tmp_path / "jail", tmp_path / "jails"
    (jails / "replimesh-node2").mkdir(parents=True)
    (jails / "replimesh-node3").mkdir()
    sources = {"/usr/bin/unison": str(host / "unison"), "/lib/libx.so": str(host / "libx.so")}
    return template, jails, sources, host


def test_a_changed_package_reaches_the_template_and_every_jail_as_new_files(tmp_path: Path) -> None:
    template, jails, sources, host = build(tmp_path)
    first = refresh_template(str(template), sources)
    assert sorted(first) == [f"{template}/lib/libx.so", f"{template}/usr/bin/unison"]
    linked = refresh_jails(str(template), str(jails), sorted(sources))
    assert len(linked) == 2 * 2 + 2 * 3  # the files, and their directories (lib, usr, usr/bin) per jail
    assert refresh_template(str(template), sources) == []  # nothing differs: nothing is copied
    assert refresh_jails(str(template), str(jails), sorted(sources)) == []

    # An upgrade replaces the host's binary: the template gets a new file, each jail links it.
    old_inode = (template / "usr/bin/unison").stat().st_ino
    (host / "unison").write_bytes(b"new build")
    assert refresh_template(str(template), sources, dry_run=True) == [f"{template}/usr/bin/unison"]
    assert (template / "usr/bin/unison").read_bytes() == b"old build"  # a dry run changes nothing
    assert refresh_template(str(template), sources) == [f"{template}/usr/bin/unison"]
    new = template / "usr/bin/unison"
    assert new.stat().st_ino != old_inode and oct(new.stat().st_mode & 0o7777) == "0o755"
    assert sorted(refresh_jails(str(template), str(jails), sorted(sources))) == [
        f"{jails}/replimesh-node2/usr/bin/unison",
        f"{jails}/replimesh-node3/usr/bin/unison",
    ]
    for jail in ("replimesh-node2", "replimesh-node3"):
        assert (jails / jail / "usr/bin/unison").stat().st_ino == new.stat().st_ino
        assert (jails / jail / "lib/libx.so").read_bytes() == b"old lib"


def test_a_file_with_the_right_content_but_not_roots_0755_is_replaced(tmp_path: Path) -> None:
    template, _, sources, _ = build(tmp_path)
    refresh_template(str(template), sources)
    (template / "usr/bin/unison").chmod(0o777)
    assert refresh_template(str(template), sources) == [f"{template}/usr/bin/unison"]
    assert (template / "usr/bin/unison").stat().st_mode & 0o7777 == 0o755


def test_no_jails_yet_is_nothing_to_do(tmp_path: Path) -> None:
    assert refresh_jails(str(tmp_path / "jail"), str(tmp_path / "none"), ["/bin/sh"]) == []
