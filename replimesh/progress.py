"""Live per-host progress of a playbook run, fed by ansible-runner's events.

On a terminal it is a table that redraws in place (one row per host: what it is doing, its counts); when
the output is a file or a pipe it is one line per host per changed, failed or unreachable task, so a CI
log stays short and still says where things went wrong. Either way it goes to stderr: stdout stays free
for what a command prints as its answer (a report, JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

# ansible-runner event name -> the outcome it records for a host.
OUTCOMES = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}
STYLE = {"done": "green", "running": "cyan", "failed": "bold red", "unreachable": "bold red"}


@dataclass
class HostProgress:
    """What one host has done so far in this run."""

    task: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    last_error: str = ""
    done: bool = False

    @property
    def state(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "done" if self.done else "running"


def _message(data: dict[str, Any]) -> str:
    """The short reason Ansible gives for a failed or unreachable task."""
    res = data.get("res") or {}
    text = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    if isinstance(text, list):
        text = " ".join(str(part) for part in text)
    first = str(text).strip().splitlines()
    return first[0][:300] if first else ""


@dataclass
class Progress:
    """An ansible-runner `event_handler`: call it with every event; `close()` when the run ended."""

    title: str
    console: Console = field(default_factory=lambda: Console(stderr=True))
    hosts: dict[str, HostProgress] = field(default_factory=dict)
    play: str = ""
    _live: Live | None = None

    def __post_init__(self) -> None:
        if self.console.is_terminal:
            self._live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)
            self._live.start()
        else:
            self._line(f"{self.title}: started")

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.play = str(data.get("play", ""))
        elif kind in OUTCOMES and data.get("host"):
            self._record(kind, data)
        if self._live is not None:
            self._live.update(self._table())
        return True  # ansible-runner keeps the event (its artifacts, `runner.events`)

    def _record(self, kind: str, data: dict[str, Any]) -> None:
        host = self.hosts.setdefault(str(data["host"]), HostProgress())
        host.task = str(data.get("task", ""))
        outcome = OUTCOMES[kind]
        if outcome == "ok" and (data.get("res") or {}).get("changed"):
            outcome = "changed"
        if outcome == "failed" and data.get("ignore_errors"):
            outcome = "ok"
        setattr(host, outcome, getattr(host, outcome) + 1)
        host.ok += outcome == "changed"  # as in Ansible's recap, a changed task is also ok
        if outcome in ("failed", "unreachable"):
            host.last_error = _message(data)
        if self._live is None and outcome in ("changed", "failed", "unreachable"):
            reason = f": {host.last_error}" if outcome != "changed" and host.last_error else ""
            self._line(f"  {data['host']}: {outcome}: {host.task}{reason}")

    def _table(self) -> Table:
        table = Table(title=escape(f"{self.title} · {self.play}" if self.play else self.title))
        for column in ("host", "state", "ok", "changed", "failed", "task"):
            table.add_column(column, no_wrap=True, overflow="ellipsis")
        for name, host in sorted(self.hosts.items()):
            style = STYLE.get(host.state, "")
            table.add_row(
                escape(name),
                f"[{style}]{host.state}[/]" if style else host.state,
                str(host.ok),
                f"[yellow]{host.changed}[/]" if host.changed else "0",
                f"[bold red]{host.failed + host.unreachable}[/]" if host.failed + host.unreachable else "0",
                escape(host.last_error or host.task),
            )
        return table

    def close(self, status: str) -> None:
        """Stop the live display; print where each host ended."""
        for host in self.hosts.values():
            host.done = True
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()
        else:
            self._line(f"{self.title}: {status}")
            for name, h in sorted(self.hosts.items()):
                counts = f"ok={h.ok} changed={h.changed} failed={h.failed} unreachable={h.unreachable}"
                self._line(f"  {name} {counts}")

    def _line(self, text: str) -> None:
        """One line of plain output, never wrapped (log readers and tests grep it)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def failures(self) -> list[str]:
        """One line per host that failed or was unreachable, with Ansible's reason."""
        return [
            f"{name}: {host.state}" + (f" ({host.last_error})" if host.last_error else "")
            for name, host in sorted(self.hosts.items())
            if host.state in ("failed", "unreachable")
        ]
