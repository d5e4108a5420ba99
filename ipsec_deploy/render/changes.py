"""Rich output for host changes: the diff before applying, progress while applying, the summary after."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timezone

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from ..executor.diff import Operation, comparable
from ..executor.journal import RunSummary
from ..executor.rollout import RolloutReport
from ..executor.run import ChangeSet, HostResult

_SYMBOLS = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}


def changed_fields(operation: Operation) -> list[str]:
    """Describe each field an update changes as 'field: old -> new'."""
    if operation.before is None or operation.after is None:
        return []
    lines = []
    # Values Windows fills in by default (a main mode lifetime) are not changes.
    before = comparable(operation.before, operation.after)
    for field in fields(operation.after):
        if field.name == "mirrors" or not field.compare:
            continue
        old = getattr(before, field.name)
        new = getattr(operation.after, field.name)
        if old != new:
            lines.append(f"{field.name}: {_show(old)} -> {_show(new)}")
    return lines


def _show(value) -> str:
    if isinstance(value, tuple):
        if value and hasattr(value[0], "__dataclass_fields__"):
            return "[" + "; ".join(", ".join(f"{k}={v}" for k, v in vars(item).items() if v is not None) for item in value) + "]"
        return ", ".join(value) or "Any"
    return str(value)


def print_change_set(change_set: ChangeSet, console: Console) -> None:
    for name in sorted(change_set.changes):
        change = change_set.changes[name]
        if not change.reachable:
            console.print(f"[bold]{name}[/bold]: [red]not read: {escape(change.error or '')}[/red]")
            continue
        if not change.operations:
            console.print(f"[bold]{name}[/bold]: no changes")
        else:
            console.print(f"[bold]{name}[/bold]: {len(change.operations)} change(s)")
            for operation in change.operations:
                symbol, colour = _SYMBOLS[operation.action]
                console.print(f"  [{colour}]{symbol} {operation.action} {operation.kind} {operation.name}[/{colour}]")
                for line in changed_fields(operation):
                    # Proposals print in square brackets, which rich would take for markup.
                    console.print(f"      {line}", highlight=False, markup=False)
        for warning in change.warnings:
            console.print(f"  [yellow]warning: {escape(warning)}[/yellow]")


def print_results(results: list[HostResult], console: Console, run_id: str | None, staged: bool = False) -> None:
    """Print each host's status and the writes sent to it, and with ``staged`` why writes can exceed the changes listed."""
    # A table title wraps at the table's width, which would split the run id.
    console.print("Result" + (f" of run {run_id}" if run_id else ""), style="italic", markup=False)
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("Host")
    table.add_column("Status")
    table.add_column("Writes", justify="right")
    table.add_column("Detail", overflow="fold")
    colours = {"changed": "green", "unchanged": "default", "failed": "red", "unreachable": "red"}
    for result in sorted(results, key=lambda r: r.host):
        colour = colours.get(result.status, "default")
        table.add_row(result.host, f"[{colour}]{result.status}[/{colour}]", str(result.operations), escape(result.detail))
    console.print(table)
    note = "Writes counts the writes each host applied in this run, including any that a failure later undid."
    if staged:
        note += (" The staged rollout also sends Set- writes that lower, request and raise the rules, so a host can "
                 "take more writes than its changes listed above.")
    console.print(note)


def print_rollout(report: RolloutReport, console: Console) -> None:
    """Say which rules stayed in Request, which hosts were restored or skipped, and which removals wait."""
    if report.kept_unchanged:
        console.print(f"[yellow]{len(report.kept_unchanged)} rule(s) were not changed, at their old security, because a peer they cover may still hold its old rules:[/yellow]")
        for line in report.kept_unchanged:
            console.print(f"  [yellow]{escape(line)}[/yellow]", highlight=False)
    if report.held_in_request:
        console.print(f"[yellow]{len(report.held_in_request)} rule(s) stayed in Request because a pair did not verify (traffic may be clear, but nothing is dropped):[/yellow]")
        for line in report.held_in_request:
            console.print(f"  [yellow]{escape(line)}[/yellow]", highlight=False)
    for host in report.restored_hosts:
        console.print(f"[red]{host}: restored to its state before the run (--strict)[/red]")
    for host in report.skipped_hosts:
        console.print(f"[red]{host}: not changed: too many hosts failed in earlier batches[/red]")
    for line in report.kept_for_peers:
        console.print(f"[yellow]kept for now: {escape(line)}[/yellow]", highlight=False)
    for line in report.pending_restores:
        console.print(f"[red]{escape(line)}[/red]", highlight=False)
    for line in report.raised_unverified:
        console.print(f"[yellow]raised without verification: {escape(line)}[/yellow]", highlight=False)
    for line in report.clock_warnings:
        console.print(f"[yellow]warning: {escape(line)}[/yellow]", highlight=False)


def format_started_utc(started: str) -> str:
    """Format a journal's ISO start time as 'YYYY-MM-DD HH:MM:SS.mmm' in UTC, or return other text unchanged."""
    try:
        moment = datetime.fromisoformat(started)
    except ValueError:
        return started
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def describe_reverted_run(run_id: str, metadata: dict) -> str:
    """Name the run a revert restores from: its id, kind, start time and inventory file."""
    started = format_started_utc(metadata.get("started", "an unknown time"))
    inventory = metadata.get("inventory", "an unknown inventory")
    return f"Reverting run {run_id}: {metadata.get('kind', 'run')} started {started} UTC with {inventory}."


def print_runs(runs: list[RunSummary], console: Console) -> None:
    """List the runs, one line each, with the hosts grouped by status on indented lines below.

    Run ids and times are not cut, because 'revert --run' takes the ids as
    they are printed. Host lists wrap between names, so a name is split only
    when it is longer than the console is wide.
    """
    rows = [(run.run_id, format_started_utc(run.started), run.kind, run.result) for run in runs]
    headings = ("Run", "Started (UTC)", "Kind", "Result")
    widths = [max(len(row[i]) for row in [headings, *rows]) for i in range(len(headings) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + "  " + cells[-1]

    console.print(Text(line(headings), style="bold"))
    for run, row in zip(runs, rows):
        console.print(Text(line(row)))
        details = []
        if run.reverts:
            details.append(f"reverts run {run.reverts}")
        by_status: dict[str, list[str]] = {}
        for name, info in sorted(run.hosts.items()):
            by_status.setdefault(info.get("status", "?"), []).append(name)
        details.extend(f"{status}: {', '.join(names)}" for status, names in by_status.items())
        if run.pending_hosts:
            details.append(f"confirmation pending on {', '.join(run.pending_hosts)}")
        restored = sorted(host for host, restore in run.restores.items() if restore.get("state") == "restored")
        if restored:
            details.append(f"restored itself to before the run: {', '.join(restored)}")
        details.extend(f"left in Request: {rule}" for rule in run.held_in_request)
        for detail in details:
            console.print(Padding(Text(detail, overflow="fold"), (0, 0, 0, 4), expand=False))


class ProgressEvents:
    """Shows one line per host with its current step."""

    def __init__(self, console: Console, hosts: list[str]) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description:<20}"), TextColumn("{task.fields[status]}"), console=console, transient=True)
        self.tasks = {host: self.progress.add_task(host, status="waiting", total=None) for host in hosts}

    def __enter__(self) -> "ProgressEvents":
        self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.progress.stop()

    def host_status(self, host: str, status: str) -> None:
        if host in self.tasks:
            self.progress.update(self.tasks[host], status=status)
