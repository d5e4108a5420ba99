"""The ``ipsec-deploy`` command line: a thin typer layer over the library.

Exit codes: 0 success, 1 invalid inventory (or a failed host operation), 2
usage error. No user error ends in a traceback.
"""

from __future__ import annotations

import fnmatch
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .inventory import Inventory, InventoryError, load_inventory
from .planner import Plan, build_plan
from .render.json_plan import render_json
from .render.powershell import SCRIPT_FILE_ENCODING, render_host_script, script_file_name
from .render.table import print_plan

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="ipsec-deploy",
    help=(
        "Deploy mirrored IPsec transport-mode rules (connection security rules) to "
        "Windows Server hosts over WinRM, from an inventory YAML file.\n\n"
        "Start with 'ipsec-deploy plan inventory/example.yaml' to see what the tool "
        "would create on each host; nothing is sent to any host by 'plan'."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


@app.callback()
def _root() -> None:
    # A callback keeps typer in multi-command mode, so "plan" is a subcommand.
    pass


class PlanFormat(str, Enum):
    table = "table"
    json = "json"
    powershell = "powershell"


class UsageError(Exception):
    """A command-line value that cannot be used; reported with exit code 2."""


def select_hosts(inventory: Inventory, limit: str | None) -> set[str]:
    """Return the host names that a --limit value selects (all hosts without one).

    The value is a comma-separated list of group names and host name patterns
    (shell wildcards, case-insensitive), as in Ansible's --limit.
    """
    if not limit:
        return set(inventory.hosts)
    selected: set[str] = set()
    for term in (t.strip() for t in limit.split(",")):
        if not term:
            continue
        if term in inventory.groups:
            selected.update(inventory.groups[term].hosts)
            continue
        matches = {name for name in inventory.hosts if fnmatch.fnmatchcase(name.lower(), term.lower())}
        if not matches:
            raise UsageError(
                f"--limit: no host or group matches '{term}'; hosts are: {', '.join(sorted(inventory.hosts))}"
            )
        selected.update(matches)
    return selected


def report_inventory_error(error: InventoryError) -> None:
    errors = [p for p in error.problems if p.severity == "error"]
    for problem in error.problems:
        style = "red" if problem.severity == "error" else "yellow"
        stderr.print(f"[{style}]{problem}[/{style}]")
    stderr.print(f"[bold red]{len(errors)} error(s): the inventory is invalid and nothing was planned.[/bold red]")


def load_plan(inventory_path: Path, limit: str | None) -> tuple[Inventory, Plan]:
    """Load, check and plan an inventory; exit with 1 or 2 on user errors."""
    try:
        inventory = load_inventory(inventory_path)
        plan = build_plan(inventory)
        selected = select_hosts(inventory, limit)
    except InventoryError as error:
        report_inventory_error(error)
        raise typer.Exit(EXIT_FAILED) from None
    except UsageError as error:
        stderr.print(f"[red]error: {error}[/red]")
        raise typer.Exit(EXIT_USAGE) from None
    return inventory, plan.limited_to(selected)


INVENTORY_ARGUMENT = typer.Argument(..., help="Inventory YAML file (see docs/inventory.md).", show_default=False)
LIMIT_OPTION = typer.Option(
    None,
    "--limit",
    "-l",
    help="Only these hosts: comma-separated group names or host name patterns with * and ?, e.g. 'DB-*,web'.",
)


@app.command()
def plan(
    inventory: Path = INVENTORY_ARGUMENT,
    output_format: PlanFormat = typer.Option(
        PlanFormat.table,
        "--format",
        "-f",
        help="table: per-host tables, pairs and warnings; json: the stable plan document "
        "(docs/plan-json.md); powershell: one reviewable script per host.",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="With --format powershell: write HOST.ps1 files into this directory instead of printing.",
        file_okay=False,
    ),
    limit: Optional[str] = LIMIT_OPTION,
) -> None:
    """Show the objects each host must hold, without contacting any host.

    Checks the inventory first and lists every problem as file:line: message.
    """
    _, the_plan = load_plan(inventory, limit)

    if out is not None and output_format != PlanFormat.powershell:
        stderr.print("[red]error: --out only applies to --format powershell[/red]")
        raise typer.Exit(EXIT_USAGE)

    if output_format == PlanFormat.table:
        print_plan(the_plan, stdout)
    elif output_format == PlanFormat.json:
        # Plain write: rich would wrap long lines and break the JSON.
        typer.echo(render_json(the_plan), nl=False)
    else:
        write_scripts(the_plan, out)

    if output_format != PlanFormat.table:
        for warning in the_plan.warnings:
            stderr.print(f"[yellow]{warning.location}: warning: {warning.message}[/yellow]")


def write_scripts(the_plan: Plan, out: Path | None) -> None:
    if out is None:
        for host_plan in the_plan.hosts:
            typer.echo(render_host_script(the_plan, host_plan))
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        for host_plan in the_plan.hosts:
            path = out / script_file_name(host_plan.host.name)
            path.write_text(render_host_script(the_plan, host_plan), encoding=SCRIPT_FILE_ENCODING)
            stderr.print(f"wrote {path}")
    except OSError as error:
        stderr.print(f"[red]error: cannot write scripts to {out}: {error.strerror}[/red]")
        raise typer.Exit(EXIT_FAILED) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
