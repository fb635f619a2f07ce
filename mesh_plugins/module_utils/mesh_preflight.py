"""What must hold on a node before replimesh changes anything there (the preflight of bootstrap and add-node).

Each check returns a problem (one sentence that says what is wrong and what to do) or None; none of them
changes the node, except the bind-mount probe, which mounts and unmounts an empty directory of its own.
The module ``mesh_preflight`` runs them on a node; the clock is judged on the controller (the node's time
is only read here).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence

# run(argv) -> (rc, stdout, stderr)
Runner = Callable[[Sequence[str]], "tuple[int, str, str]"]

SSHD_CONFIG = "/etc/ssh/sshd_config"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/replimesh.conf"
UNSET_LOGINUID = 4294967295  # (uid_t)-1: no login uid yet
CAP_AUDIT_CONTROL = 30  # the capability that lets a process change a login uid already set
CRON_NAMES = ("cron", "crond")


def _directives(text: str) -> Iterable[tuple[str, str]]:
    """(keyword in lower case, arguments) of each line of an sshd_config, comments and blanks skipped."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _sep, rest = line.partition(" ") if " " in line else line.partition("\t")
        yield keyword.lower().rstrip("="), rest.strip()


def sshd_include_problem(
    config_text: str, dropin: str = SSHD_DROPIN, config: str = SSHD_CONFIG
) -> str | None:
    """sshd reads a drop-in only where sshd_config includes it, and a line after a ``Match`` belongs to that
    Match: replimesh's drop-in (the jail, no shell for peers) works only if included before any Match."""
    base = posixpath.dirname(config)
    for keyword, args in _directives(config_text):
        if keyword == "match":
            return (
                f"{config} has a Match block before any Include of {posixpath.dirname(dropin)}/*.conf: sshd "
                "would apply replimesh's settings inside that Match only; move the Include line above the "
                "first Match"
            )
        if keyword == "include":
            for pattern in shlex.split(args):
                pattern = pattern if pattern.startswith("/") else posixpath.join(base, pattern)
                if fnmatch.fnmatchcase(dropin, pattern):
                    return None
    return (
        f"{config} does not include {posixpath.dirname(dropin)}/*.conf, so sshd would never read replimesh's "
        f"settings; add 'Include {posixpath.dirname(dropin)}/*.conf' before any Match block"
    )


def bind_mount_problem(run: Runner, workdir: str | None = None) -> str | None:
    """Try what the jails need, on an empty directory of our own: a recursive bind mount, made read-only."""
    top = tempfile.mkdtemp(prefix="replimesh-preflight-", dir=workdir)
    source, target = os.path.join(top, "source"), os.path.join(top, "target")
    os.mkdir(source)
    os.mkdir(target)
    mounted = False
    try:
        rc, out, err = run(["mount", "--rbind", "--make-rslave", source, target])
        mounted = rc == 0
        if rc == 0:
            rc, out, err = run(["mount", "-o", "remount,bind,ro,nosuid,nodev", target])
        if rc != 0:
            # mount: /tmp/replimesh-preflight-x/target: permission denied.  (then a hint to read dmesg)
            first = ((err or out).strip().splitlines() or [f"exit {rc}"])[0]
            reason = first.rsplit(": ", 1)[-1].rstrip(".") if first.startswith("mount") else first
            return (
                f"root cannot bind-mount here ({reason}): each peer's jail needs read-only bind mounts of "
                "the folders; on a container give it CAP_SYS_ADMIN (e.g. docker run --cap-add SYS_ADMIN), "
                "or use a VM"
            )
        return None
    finally:
        if mounted:
            run(["umount", "-R", target])
        if not mounted or not os.path.ismount(target):
            shutil.rmtree(top, ignore_errors=True)


def _status_field(status: str, name: str) -> str | None:
    match = re.search(rf"^{name}:\s*(\S+)", status, re.MULTILINE)
    return match.group(1) if match else None


def has_capability(status: str, cap: int) -> bool:
    """Whether a process's /proc/PID/status grants ``cap`` in its effective set (CapEff)."""
    value = _status_field(status, "CapEff")
    return value is not None and bool(int(value, 16) >> cap & 1)


def cron_masters(procs: Mapping[str, Mapping[str, str]]) -> list[Mapping[str, str]]:
    """The cron daemons among the processes named cron (pid -> its loginuid, status, name): not those whose
    parent is one of them. Those are cron's children running a job, whose login uid pam_loginuid set to
    the job's user (0 for root's jobs, such as cron.daily, which apt's job keeps running for up to half an
    hour): they say nothing of the daemon."""
    return [proc for pid, proc in procs.items() if _status_field(proc.get("status", ""), "PPid") not in procs]


def pam_requires_loginuid(pam_text: str) -> bool:
    """Whether a PAM service file makes pam_loginuid's failure fatal (Debian's /etc/pam.d/cron does)."""
    for line in pam_text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3 and fields[0].lstrip("-") == "session" and "pam_loginuid" in fields[2]:
            return fields[1] in ("required", "requisite")
    return False


def cron_problem(
    daemons: Sequence[Mapping[str, str]],
    starter: Mapping[str, str] | None,
    pam_text: str,
    job_uid: int,
) -> str | None:
    """Whether cron would run the mesh user's job. ``daemons``: each running cron's ``loginuid`` and
    ``status`` (/proc/PID/loginuid and /proc/PID/status); none running: ``starter`` is what would start it
    (this session, on a host without systemd; None with systemd, which starts services without a login uid).

    A job runs only if cron's PAM session opens: pam_loginuid sets the job's login uid, and a process whose
    login uid is already set (cron started from a login shell) may change it only with CAP_AUDIT_CONTROL,
    which containers usually lack. Then every job fails, silently, while cron itself runs."""
    if not pam_requires_loginuid(pam_text):
        return None
    procs = list(daemons) or ([starter] if starter else [])
    for proc in procs:
        loginuid = int(proc.get("loginuid", UNSET_LOGINUID) or UNSET_LOGINUID)
        if loginuid in (UNSET_LOGINUID, job_uid) or has_capability(proc.get("status", ""), CAP_AUDIT_CONTROL):
            continue
        how = "runs" if daemons else "would be started from this login and run"
        return (
            f"cron {how} with login uid {loginuid} and without CAP_AUDIT_CONTROL, so pam_loginuid refuses "
            "every job and the scheduled rounds never run: start cron from the init system (at boot, not "
            "from a login shell), or give the container CAP_AUDIT_CONTROL"
        )
    return None


def free_space_problems(
    paths: Sequence[str],
    min_free: int,
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    device: Callable[[str], int] = lambda path: os.stat(path).st_dev,
) -> list[str]:
    """Each file system (of a path, or of its nearest existing parent) with less than ``min_free`` bytes
    free for root's use, named once, by the first of the paths on it."""
    problems, seen = [], set()
    for path in paths:
        probe = path
        while not os.path.exists(probe) and probe not in ("/", ""):
            probe = os.path.dirname(probe.rstrip("/")) or "/"
        if device(probe) in seen:
            continue
        seen.add(device(probe))
        stat = statvfs(probe)
        free = stat.f_bavail * stat.f_frsize
        if free < min_free:
            problems.append(
                f"only {free // 2**20} MiB free on the file system of {path} (needs {min_free // 2**20} "
                "MiB): free some space, or lower mesh_preflight_min_free_mib"
            )
    return problems


def unresolved_peers(
    peers: Sequence[Mapping[str, str]], resolve: Callable[[str], Sequence[str]]
) -> list[str]:
    """A problem for each peer whose host name this node cannot resolve (its pulls, and the from= of its
    key, need the address)."""
    problems = []
    for peer in peers:
        try:
            found = resolve(peer["address"])
        except (OSError, ValueError) as exc:
            found, why = (), str(exc)
        else:
            why = "no address"
        if not found:
            problems.append(
                f"peer {peer['name']}: host name {peer['address']} does not resolve here ({why}): fix DNS or "
                "/etc/hosts on this node, or write the peer's IP address in the mesh file"
            )
    return problems
