"""Digest a synced folder on a node, and compare the digests of every node: are the replicas identical?

Standard library only and self-contained: the ``mesh_digest`` module ships this file to the nodes (as
``ansible.module_utils.mesh_digest``) and meshctl imports it on the controller.

A folder's digest holds, per file path, ``[size, mode, sha256]`` and one root hash over all of them. It sees
the replica as Unison does: the folder marker, Unison's temporary files and the folder's ignore patterns are
left out, with Unison's own matching (``Name`` for a pattern without ``/``, ``Path`` with one, as the
mesh_member profiles write them; an ignored directory hides everything below it). Conflict copies are files
like any other, and are also listed apart. A cache (path -> size, mtime, ctime, inode, sha256) spares
rehashing files that did not change since the last digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MARKER = ".replimesh-folder"
CACHE_VERSION = 1
# An entry changed this close to the scan could change again within the same timestamp tick and keep its
# size: it is hashed, but not cached (git's "racily clean" rule).
RACY_NS = 1_000_000_000
# Unison's `perms` default: the bits it syncs (not setuid/setgid, which it never propagates).
PERM_BITS = 0o1777
CHUNK = 1 << 20
SHORT = 10  # hex digits of a sha256 shown to a person
# Unison's copyonconflict keeps the losing version as NAME (conflict_on_DATE).EXT beside NAME.EXT: its
# suffix goes before the name's last dot (a dotfile's copy starts with it), NAME (conflict #N_on_DATE).EXT
# when that name is taken, ..._DATE_was_deleted) for a version kept against a deletion (Unison 2.51.3 on).
CONFLICT_RE = re.compile(
    r" \(conflict(?: #[0-9]+)?_on_[0-9]{4}-[0-9]{2}-[0-9]{2}(?:_was_deleted)?\)(?P<ext>\.[^./]*)?$"
)

Entry = tuple[int, str, str]  # size, mode, sha256 (mode "link" and the target's hash for a symlink)


class DigestError(Exception):
    """A folder cannot be digested as asked (bad ignore pattern); the message says which and why."""


class CacheError(DigestError):
    """The digest cache cannot be used safely; digesting goes on without it."""


# ---- Unison's glob (src/ubase/rx.ml): `*` `?` `[...]` never match "/", nor a name's leading "." ----


_BRACES_RE = re.compile(r"(?<!\\)\{((?:\\.|[^{}\\])*)\}")  # an innermost {a,b}
_GLOB_TOKEN_RE = re.compile(r"\\(.)|(\*)|(\?)|\[([!^]?)(\]?(?:\\.|[^]\\])*)\]|(/)|(.)", re.S)


def _explode(pattern: str) -> list[str]:
    """Expand `{a,b}` alternatives (nested too) into plain globs, as Unison's globx does."""
    pending, done = [pattern], []
    while pending:
        glob = pending.pop()
        if match := _BRACES_RE.search(glob):
            alternatives = re.split(r"(?<!\\),", match.group(1))
            pending += [glob[: match.start()] + alt + glob[match.end() :] for alt in alternatives]
        elif re.search(r"(?<!\\)\{", glob):
            raise DigestError(f"ignore pattern {pattern!r}: a '{{' is never closed")
        else:
            done.append(glob)
    return done


def _glob_one(glob: str) -> str:
    out: list[str] = []
    at_start = True
    for match in _GLOB_TOKEN_RE.finditer(glob):
        escaped, star, qmark, negate, members, slash, char = match.groups()
        if at_start and (star or qmark or members):
            out.append(r"(?!\.)")  # a wildcard never matches a name's leading dot
        at_start = slash is not None
        if char == "[" or members == "":
            raise DigestError(f"ignore pattern {glob!r}: a '[' is never closed")
        if members:
            chars = re.findall(r"\\.|.", members, re.S)  # "-" stays a range; anything else is itself
            out.append(
                f"[{'^/' if negate else ''}{''.join(c if c == '-' else re.escape(c[-1]) for c in chars)}]"
            )
        else:
            out.append("[^/]*" if star else "[^/]" if qmark else re.escape(escaped or slash or char))
    return "".join(out)


def glob_regex(pattern: str) -> str:
    """A regex (for fullmatch) matching what Unison's `Path PATTERN` matches."""
    return "(?:" + "|".join(_glob_one(alt) for alt in _explode(pattern)) + ")"


@dataclass(frozen=True)
class IgnoreRules:
    """Which paths of a folder Unison leaves alone; `ignored` is asked of every directory and file."""

    names: re.Pattern[str]  # the marker and the patterns without "/", against a path's last component
    paths: re.Pattern[str] | None  # the patterns with "/", against the whole relative path

    @classmethod
    def build(cls, patterns: Iterable[str], marker: str = DEFAULT_MARKER) -> IgnoreRules:
        patterns = list(patterns)
        names = [re.escape(marker)] + [glob_regex(p) for p in patterns if "/" not in p]
        paths = [glob_regex(p) for p in patterns if "/" in p]
        return cls(re.compile("|".join(names)), re.compile("|".join(paths)) if paths else None)

    def ignored(self, rel: str, name: str) -> bool:
        if name.startswith(".unison.") and name.endswith(".tmp"):
            return True  # Unison's temporary files (.unison.NAME.HASH.unison.tmp), never synced
        return bool(self.names.fullmatch(name) or (self.paths and self.paths.fullmatch(rel)))

    def covers(self, rel: str) -> bool:
        """Whether `rel` or a directory above it is ignored (a walk never reaches what is below one)."""
        parts = rel.split("/")
        return any(self.ignored("/".join(parts[: i + 1]), part) for i, part in enumerate(parts))


def original_name(name: str) -> str | None:
    """``notes (conflict_on_2026-11-25).md`` -> ``notes.md``: the file a conflict copy was kept of, or None
    when the name is not a conflict copy's. A second copy kept the same day (``notes (conflict #1_on_D).md``),
    a dotfile's (`` (conflict_on_D).bashrc`` -> ``.bashrc``) and a copy of a copy (two nodes kept different
    versions under one copy's name) name the first file too:
    ``notes (conflict_on_D) (conflict #1_on_E).md`` -> ``notes.md``."""
    original = None
    while (match := CONFLICT_RE.search(name)) and (match.start() > 0 or match.group("ext")):
        original = name = name[: match.start()] + (match.group("ext") or "")
    return original


def conflict_copy(rel: str) -> str | None:
    """The conflict copy Unison's `copyonconflict` kept (`NAME (conflict_on_DATE).EXT`) that `rel` is or is
    inside (a directory is copied whole), or None."""
    parts = rel.split("/")
    for i, part in enumerate(parts):
        if CONFLICT_RE.search(part):
            return "/".join(parts[: i + 1])
    return None


# ---- digest of one folder on a node ----


@dataclass
class FolderDigest:
    files: dict[str, Entry] = field(default_factory=dict)
    hashed: int = 0
    cache: dict[str, list[Any]] = field(default_factory=dict)  # the cache to keep for the next digest
    marker: bool = True
    error: str | None = None

    def result(self, files: bool = True) -> dict[str, Any]:
        """The folder as the module returns it; without the file list when `files` is false."""
        result = {
            "root": root_hash(self.files),
            "conflict_copies": sorted({c for c in map(conflict_copy, self.files) if c}),
            "count": len(self.files),
            "bytes": sum(entry[0] for entry in self.files.values()),
            "marker": self.marker,
            "error": self.error,
        }
        if files:
            result["files"] = {path: list(entry) for path, entry in self.files.items()}
        return result


def root_hash(files: Mapping[str, Sequence[Any]]) -> str:
    """sha256 over the sorted "path\\0size\\0mode\\0sha" lines: equal roots, equal replicas."""
    digest = hashlib.sha256()
    for path in sorted(files):
        size, mode, sha = files[path][:3]
        digest.update(f"{path}\0{size}\0{mode}\0{sha}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def walk(root: str, rules: IgnoreRules) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of every file and symlink Unison would sync; a directory that vanishes during
    the walk (a sync is running) is passed over, one that cannot be read raises OSError."""
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir)))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if rules.ignored(rel, entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                pending.append(rel)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                yield rel, st  # fifos, sockets and devices: Unison does not sync them either


def file_sha256(path: str, st: os.stat_result) -> str:
    """sha256 of a file's content (of a symbolic link's target text, for a link), read in chunks."""
    if stat.S_ISLNK(st.st_mode):
        return hashlib.sha256(os.fsencode(os.readlink(path))).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_folder(
    path: str,
    ignore: Iterable[str] = (),
    *,
    marker: str = DEFAULT_MARKER,
    cache: Mapping[str, Sequence[Any]] | None = None,
    now_ns: int | None = None,
) -> FolderDigest:
    """Digest the folder at `path`, rehashing only files whose size, mtime, ctime or inode left `cache`."""
    rules = IgnoreRules.build(ignore, marker)
    cache = cache or {}
    now_ns = time.time_ns() if now_ns is None else now_ns
    result = FolderDigest(marker=os.path.lexists(os.path.join(path, marker)))
    if not os.path.isdir(path):
        result.error = f"{path} is not a directory on this node"
        return result
    try:
        for rel, st in walk(path, rules):
            key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            cached = cache.get(rel)
            if cached is not None and list(cached[:4]) == key:
                sha = str(cached[4])
            else:
                try:
                    sha = file_sha256(os.path.join(path, rel), st)
                except FileNotFoundError:
                    continue  # deleted since the walk saw it
                result.hashed += 1
            mode = "link" if stat.S_ISLNK(st.st_mode) else f"{stat.S_IMODE(st.st_mode) & PERM_BITS:04o}"
            # A name that is not UTF-8 shows its bytes as \xNN: JSON can carry it, the same on every node.
            result.files[os.fsencode(rel).decode("utf-8", "backslashreplace")] = (st.st_size, mode, sha)
            if max(st.st_mtime_ns, st.st_ctime_ns) < now_ns - RACY_NS:
                result.cache[rel] = [*key, sha]
    except OSError as exc:
        result.error = f"cannot read {path}: {exc}"
    return result


# The cache directory's parent (/var/lib/replimesh/state) belongs to the mesh user, who could swap the
# directory for a symlink or a directory of their own: root opens it without following a symlink, checks who
# owns the directory it got, and works inside that descriptor only.


def _cache_dir_fd(cache_dir: str, create: bool) -> int | None:
    """A descriptor of `cache_dir` (None when it is missing and not to be created)."""
    if create:
        os.makedirs(os.path.dirname(cache_dir.rstrip("/")) or "/", exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(cache_dir, 0o700)
    try:
        fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheError(f"cache {cache_dir} not used: not a plain directory ({exc})") from exc
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise CacheError(f"cache {cache_dir} not used: writable by another user than {os.geteuid()}")
    return fd


def _cache_name(folder: str) -> str:
    if not folder or folder.startswith(".") or "/" in folder:
        raise DigestError(f"folder name {folder!r} cannot name a cache file")
    return f"{folder}.json"


def load_cache(cache_dir: str, folder: str, folder_path: str) -> dict[str, list[Any]]:
    """The cached entries of a folder; none when there is no cache or it is for another path or unreadable."""
    name = _cache_name(folder)
    fd = _cache_dir_fd(cache_dir, create=False)
    if fd is None:
        return {}
    try:
        with open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb") as handle:
            data = json.loads(handle.read().decode("utf-8", "surrogateescape"))
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    ours = isinstance(data, dict) and data.get("version") == CACHE_VERSION and data.get("path") == folder_path
    return data["files"] if ours and isinstance(data.get("files"), dict) else {}


def save_cache(cache_dir: str, folder: str, folder_path: str, entries: Mapping[str, list[Any]]) -> None:
    """Replace the folder's cache atomically (a reader sees the old file or the new one, never half)."""
    document = {"version": CACHE_VERSION, "path": folder_path, "files": entries}
    content = json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogateescape")
    name = _cache_name(folder)
    fd = _cache_dir_fd(cache_dir, create=True)
    if fd is None:
        raise CacheError(f"{cache_dir} vanished while the cache was written")
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with open(os.open(tmp, flags, 0o600, dir_fd=fd), "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


# ---- comparison of every node's digests (on the controller) ----


def classify(
    results: Mapping[str, Mapping[str, Any]], details: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Sort registered mesh_digest results per node into the arguments of `compare`: digests (node ->
    {folders, hashed}), unreachable and failed nodes (node -> reason). A node with no result at all was
    not reached in this run. `details`, a later run with the file lists, replaces a node's folders."""
    digests: dict[str, Any] = {}
    unreachable: dict[str, str] = {}
    failed: dict[str, str] = {}
    for node, res in sorted(results.items()):
        res = res or {}
        if res.get("unreachable") or not res:
            unreachable[node] = " ".join(str(res.get("msg") or "not reached").split())
        elif res.get("failed") or not isinstance(res.get("folders"), Mapping):
            failed[node] = " ".join(str(res.get("msg") or "no digest returned").split())
        else:
            more = (details or {}).get(node) or {}
            latest = more if isinstance(more.get("folders"), Mapping) and not more.get("failed") else res
            hashed = int(res.get("hashed") or 0) + (int(more.get("hashed") or 0) if latest is more else 0)
            digests[node] = {"folders": latest["folders"], "hashed": hashed}
    return {"digests": digests, "unreachable": unreachable, "failed": failed}


def _diverging(
    files: Mapping[str, Mapping[str, Sequence[Any]]], local: Mapping[str, Sequence[str]] | None = None
) -> list[dict[str, Any]]:
    """Per path that is not the same on every node (node -> its file list): who holds which version. A
    node's own ignore patterns (`local`: node -> its .replimeshignore's) take it out of its paths."""
    local = local or {}
    rules = {node: IgnoreRules.build(local[node]) for node in files if local.get(node)}
    found: list[dict[str, Any]] = []
    for path in sorted({path for listing in files.values() for path in listing}):
        nodes = sorted(node for node in files if not (node in rules and rules[node].covers(path)))
        groups: dict[tuple[Any, ...], list[str]] = {}
        for node in nodes:
            entry = files[node].get(path)
            if entry is not None:
                groups.setdefault(tuple(entry[:3]), []).append(node)
        held = [node for members in groups.values() for node in members]
        if len(groups) == 1 and len(held) == len(nodes):
            continue
        versions = [
            {"size": key[0], "mode": key[1], "sha256": key[2], "nodes": members}
            for key, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0][2]))
        ]
        found.append({"path": path, "versions": versions, "missing": [n for n in nodes if n not in held]})
    return found


def _compare_folder(name: str, per_node: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    usable: dict[str, Mapping[str, Any]] = {}
    for node, folder in per_node.items():
        if not folder or folder.get("error"):
            problems[node] = (folder or {}).get("error") or f"folder {name} was not digested"
            continue
        if not folder.get("marker", True):
            problems[node] = "the folder marker is missing: Unison will not sync this folder"
        usable[node] = folder
    roots = {folder.get("root") for folder in usable.values()}
    diverging: list[dict[str, Any]] = []
    if len(roots) > 1:
        for node in [node for node, folder in usable.items() if "files" not in folder]:
            problems[node] = "differs, but its file list could not be fetched"
            del usable[node]
        local = {node: folder.get("local_ignore", []) for node, folder in usable.items()}
        diverging = _diverging({node: folder["files"] for node, folder in usable.items()}, local)
    copies: dict[str, list[str]] = {}
    for node in sorted(usable):
        for path in usable[node].get("conflict_copies", []):
            copies.setdefault(path, []).append(node)
    counts = [int(folder.get("count", 0)) for folder in usable.values()]
    return {
        # Roots also differ where a node ignores paths of its own: the file lists say what diverges.
        "identical": not diverging and not problems,
        "root": roots.pop() if len(roots) == 1 else None,
        "count": max(counts, default=0),
        "bytes": max((int(folder.get("bytes", 0)) for folder in usable.values()), default=0),
        "diverging": diverging,
        "conflict_copies": dict(sorted(copies.items())),
        "problems": problems,
    }


def compare(
    digests: Mapping[str, Mapping[str, Any]],
    unreachable: Mapping[str, str] | Iterable[str] = (),
    failed: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The mesh-wide report over the digests of the reachable nodes (node -> {folders, hashed})."""
    unreachable = dict(unreachable) if isinstance(unreachable, Mapping) else dict.fromkeys(unreachable, "")
    failed = dict(failed or {})
    nodes = sorted(digests)
    names = sorted({name for node in nodes for name in digests[node].get("folders", {})})
    folders = {
        name: _compare_folder(name, {node: digests[node]["folders"].get(name) for node in nodes})
        for name in names
    }
    return {
        "identical": bool(nodes) and not failed and all(f["identical"] for f in folders.values()),
        "nodes": nodes,
        "files": sum(f["count"] for f in folders.values()),
        "diverging": sum(len(f["diverging"]) for f in folders.values()),
        "folders": folders,
        "unreachable": dict(sorted(unreachable.items())),
        "failed": dict(sorted(failed.items())),
        "hashed": {node: int(digests[node].get("hashed", 0)) for node in nodes},
    }


def exit_code(report: Mapping[str, Any], allow_unreachable: bool = False) -> int:
    """0 only when every reachable replica is identical and no node is unreachable (unless allowed)."""
    if not report["identical"] or (report["unreachable"] and not allow_unreachable):
        return 1
    return 0


def cells(item: Mapping[str, Any]) -> dict[str, str]:
    """node -> what it holds of a diverging path: a short sha256 (and mode, if modes differ) or missing."""
    modes = len({v["mode"] for v in item["versions"]}) > 1
    held = {
        n: v["sha256"][:SHORT] + (f" {v['mode']}" if modes else "")
        for v in item["versions"]
        for n in v["nodes"]
    }
    return {**held, **dict.fromkeys(item["missing"], "missing")}


def headline(report: Mapping[str, Any]) -> str:
    where = f"in {len(report['folders'])} folders on {len(report['nodes'])} nodes"
    if report["identical"]:
        return f"identical: {report['files']} files {where}"
    problems = sum(len(folder["problems"]) for folder in report["folders"].values())
    counts = {
        "diverging paths": report["diverging"],
        "folder problems": problems,
        "failed nodes": len(report["failed"]),
    }
    found = ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "no reachable node"
    return f"NOT identical: {found} {where}"


def render_lines(report: Mapping[str, Any], limit: int = 50, paths: bool = True) -> list[str]:
    """The report as plain text lines: at most `limit` diverging paths (none unless `paths`)."""
    lines = [headline(report)]
    limit, shown = limit if paths else 0, 0
    for name, folder in report["folders"].items():
        for node, problem in folder["problems"].items():
            lines.append(f"problem      {name} on {node}: {problem}")
        for item in folder["diverging"]:
            shown += 1
            if shown > limit:
                continue
            by_label: dict[str, list[str]] = {}
            for node, label in cells(item).items():
                by_label.setdefault(label, []).append(node)
            held = "; ".join(f"{','.join(sorted(nodes))}: {label}" for label, nodes in by_label.items())
            lines.append(f"diverging    {name}:{item['path']}  {held}")
        for path, nodes in folder["conflict_copies"].items():
            lines.append(f"conflict     {name}:{path} on {','.join(nodes)}")
    if shown > limit and paths:
        lines.append(f"... and {shown - limit} more diverging paths")
    for kind in ("unreachable", "failed"):
        lines += [f"{kind:<12} {node}: {why or '-'}" for node, why in report[kind].items()]
    return lines
