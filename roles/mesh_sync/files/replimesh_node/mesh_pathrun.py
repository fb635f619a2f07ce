"""Pulls of some paths only: the watcher's, and the settling runs that end a round.

Settling: a round pulls from every peer at once. A file that arrived here from one peer (its origin) is
then, as a rule, on the other peers too, pulled from the same origin; but the edge between this node and
each of them has no record of it until one of its runs sees the same file on both ends. Should a peer
change the file before that, this node's next pull from it would find a file "new on both sides" with
two contents, and keep a needless conflict copy of the first. So a round that brought anything pulls those
paths once more from every peer whose edge ran fine: where the peer holds the same file, a no-op that
records it; where it has none yet, nothing (the peer's own round settles it from its side). Only the
paths that arrived are named, so a settling run never scans a whole tree, and it deletes nothing: a
deletion it finds waits for the next round and that round's brake.

Installed beside the runner; standard library only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .mesh_runner import Config, Folder, Peer, Runner

MAX_PATHS = 200  # -path arguments per run; more are folded into their parent directories
# An edge whose round run ended so is settled; any other (busy, failed, ...) is left to the next round.
SETTLED_KINDS = frozenset({"ok", "conflict"})


def compact_paths(paths: Iterable[str], limit: int = MAX_PATHS) -> list[str] | None:
    """The fewest paths that cover `paths` (a directory covers what is below it), folded into parent
    directories until at most `limit` remain; None means the whole folder."""
    current = set(paths)
    while True:
        if "" in current:
            return None
        kept = sorted(p for p in current if not any(p.startswith(q + "/") for q in _ancestors(p) & current))
        if len(kept) <= limit:
            return kept
        deepest = max(p.count("/") for p in kept)
        current = {p.rsplit("/", 1)[0] if p.count("/") == deepest and "/" in p else p for p in kept}
        if deepest == 0:
            return None


def compact_folders(folders: Mapping[str, Iterable[str] | None]) -> dict[str, list[str] | None]:
    """compact_paths for each folder of a pull; a folder already None (whole) stays whole."""
    return {f: None if p is None else compact_paths(p) for f, p in folders.items()}


def _ancestors(path: str) -> set[str]:
    parts = path.split("/")
    return {"/".join(parts[:i]) for i in range(1, len(parts))}


class PathRunner(Runner):
    """The runner's edge sync (edge lock, marker check, status record, log) for some paths only."""

    def __init__(
        self,
        config: Config,
        paths: Mapping[str, list[str] | None],
        slots: threading.BoundedSemaphore | None = None,
    ) -> None:
        folders = tuple(f for f in config.folders if f.name in paths)
        super().__init__(replace(config, folders=folders), slots=slots)
        self.paths = paths

    def command(self, peer: Peer, folder: Folder) -> list[str]:
        argv = super().command(peer, folder)
        paths = self.paths[folder.name]
        for path in paths or []:
            argv += ["-path", path]
        if paths:
            # Unison takes every deleted -path for an emptied replica ("may delete everything below these
            # paths") and refuses it in batch mode, also the deletion of a folder's last files. These are
            # paths inotify saw change here; a missing disk is the marker's case, checked before every
            # run (and, by the profile's mountpoint, on the peer). Whole-folder runs keep the check.
            argv += ["-confirmbigdel=false"]
        return argv


def settle_round(
    runner: Runner, peers: Sequence[Peer], edges: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """After a round that pulled something (`runner.pulled`): pull those paths once more from each peer
    whose edge ran fine, each edge's record keeping its round run's files and conflicts. The edges'
    results, in the order of `peers`."""
    out = [dict(edge) for edge in edges]
    todo = [i for i, edge in enumerate(edges) if edge["result"] in SETTLED_KINDS]
    if not runner.pulled or len(todo) < 2:  # one edge ran fine: what arrived came from it (else: next round)
        return out
    settler = PathRunner(runner.config, compact_folders(runner.pulled), runner.slots)
    settler.apply_held = False  # it records; a deletion waits for a round, under its brake
    if runner.config.concurrency == 1:
        done = [settler.sync_edge(peers[i], carry=edges[i]) for i in todo]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=runner.config.concurrency) as pool:
            done = list(pool.map(lambda i: settler.sync_edge(peers[i], carry=edges[i]), todo))
    for i, result in zip(todo, done, strict=True):
        out[i] = result
    return out
