"""The ``ipsec-deploy`` command line: a thin typer layer over the library.

Exit codes: 0 success, 1 invalid inventory, a failed host operation or a
failed verification, 2 usage error, 130 interrupted. No user error ends in
a traceback. The change flow that apply and revert share is in
``ipsec_deploy.cli_flow``.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import sys
from importlib.metadata import version as package_version
from dataclasses import asdict
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from .cli_flow import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    DeployOptions,
    deploy,
    host_access,
    report_inventory_error,
    run_verification,
    stderr,
    stdout,
)
from .executor.journal import DEFAULT_JOURNAL_DIR, JournalError, list_runs, load_snapshots
from .executor.rollout import RolloutOptions
from .executor.run import Executor
from .executor.snapshot_plan import snapshot_plan
from .inventory import Inventory, InventoryError, load_inventory
from .planner import Plan, build_plan
from .render.changes import describe_reverted_run, print_runs
from .render.json_plan import plan_to_json, render_json
from .render.powershell import SCRIPT_FILE_ENCODING, render_host_script, script_file_name
from .render.table import print_plan
from .render.verification import print_report, render_report_json

class _PlainHelpParameters:
    """Help that shows no value placeholder for flags and arguments in capitals, as in click.

    typer 0.29.2 prints a type for every option, '<bool>' for a flag too, which
    reads as if '--dry-run true' were valid, and writes a required argument
    as '{inventory}' in the usage line.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
            elif isinstance(param, TyperArgument) and param.metavar is None:
                param.metavar = param.name.upper()

    def get_help_option(self, ctx: typer.Context):
        option = super().get_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as error:
            # typer 0.29.2 passes on pydantic's message for a value outside an
            # Enum with pydantic's "Value error, " prefix.
            error.message = error.message.removeprefix("Value error, ")
            raise


class PlainHelpCommand(_PlainHelpParameters, TyperCommand):
    """A command with click's look of help and usage."""


class PlainHelpGroup(_PlainHelpParameters, TyperGroup):
    """A command group with click's look of help and usage."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        # The parameters' pieces replace click's, which end with the command placeholder.
        return super().collect_usage_pieces(ctx) + [self.subcommand_metavar]


app = typer.Typer(
    name="ipsec-deploy",
    cls=PlainHelpGroup,
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


class LogLevel(str, Enum):
    """Levels of the log written to standard error."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _print_version(requested: bool) -> None:
    if requested:
        typer.echo(f"ipsec-deploy {package_version('ipsec-deploy')}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the installed version and exit."
    ),
    log_level: LogLevel = typer.Option(
        LogLevel.warning,
        "--log-level",
        help="Log to standard error from this level: warning shows retries, info also sessions and each host's steps.",
    ),
) -> None:
    # A callback also keeps typer in multi-command mode, so "plan" is a subcommand.
    # basicConfig does nothing when the host program (or pytest) already
    # configured logging; the package's level applies either way.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("ipsec_deploy").setLevel(log_level.value.upper())


class PlanFormat(str, Enum):
    table = "table"
    json = "json"
    powershell = "powershell"


class VerifyFormat(str, Enum):
    """Output formats of verify and runs."""

    table = "table"
    json = "json"


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
            groups = f"; groups are: {', '.join(sorted(inventory.groups))}" if inventory.groups else ""
            raise UsageError(
                f"--limit: no host or group matches '{term}'; hosts are: {', '.join(sorted(inventory.hosts))}{groups}"
            )
        selected.update(matches)
    return selected


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
        stderr.print(f"error: {error}", style="red", markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    return inventory, plan.limited_to(selected)


INVENTORY_ARGUMENT = typer.Argument(..., help="Inventory YAML file (see docs/inventory.md).", show_default=False)
LIMIT_OPTION = typer.Option(
    None,
    "--limit",
    "-l",
    help="Only these hosts: comma-separated group names or host name patterns with * and ?, e.g. 'DB-*,web'.",
)


@app.command(cls=PlainHelpCommand)
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
        print_plan_warnings(the_plan)


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


JOURNAL_OPTION = typer.Option(
    Path(DEFAULT_JOURNAL_DIR),
    "--journal-dir",
    help="Directory of the run journal (runs/<run-id>/ contains the plan, snapshots and operations).",
    file_okay=False,
)
FORKS_OPTION = typer.Option(10, "--forks", min=1, max=200, help="How many hosts to work on in parallel.")
ATTEMPTS_OPTION = typer.Option(
    3,
    "--attempts",
    min=1,
    max=10,
    help="Tries per host for transient faults (connection refused or reset, timeouts, HTTP 425, 429, 502, 503 and 504, WinRM quota faults) when connecting "
    "and reading; waits grow exponentially between tries. Changes are never sent twice.",
)
YES_OPTION = typer.Option(False, "--yes", "-y", help="Apply without asking for confirmation (required without a terminal).")
LAB_OPTION = typer.Option(
    False,
    "--lab",
    help="Start the inventory's simulated lab hosts (not Windows) for this command, and use the lab password.",
)
VERIFY_TIMEOUT_OPTION = typer.Option(30.0, "--verify-timeout", min=0.0, help="Seconds to wait for security associations to appear after the probe traffic.")
CONFIRM_TIMEOUT_OPTION = typer.Option(
    10.0,
    "--confirm-timeout",
    min=1.0,
    help="Minutes a changed host waits for this run to confirm it; a host the run loses (or a run that crashes) "
    "restores its objects from before the run by itself after that.",
)
LAB_STATE_OPTION = typer.Option(None, "--lab-state", help="With --lab: directory of the lab hosts' state.", file_okay=False)


@app.command(cls=PlainHelpCommand)
def apply(
    inventory: Path = INVENTORY_ARGUMENT,
    limit: Optional[str] = LIMIT_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Read the hosts and show the changes, then stop: the live dry run for a change window."),
    yes: bool = YES_OPTION,
    forks: int = FORKS_OPTION,
    attempts: int = ATTEMPTS_OPTION,
    journal_dir: Path = JOURNAL_OPTION,
    lab: bool = LAB_OPTION,
    lab_state: Optional[Path] = LAB_STATE_OPTION,
    no_verify: bool = typer.Option(
        False,
        "--no-verify",
        help="Apply the planned security directly: no stages, no restore task and no verification.",
    ),
    verify_timeout: float = VERIFY_TIMEOUT_OPTION,
    strict: bool = typer.Option(False, "--strict", help="Restore the hosts of a pair that fails verification instead of leaving it in Request."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Hosts per batch in the lower and request stages (like Ansible's serial); default: all at once."),
    max_fail_percent: Optional[float] = typer.Option(
        None, "--max-fail-percent", min=0.0, max=100.0, help="Stop starting new batches once more than this percentage of hosts failed."
    ),
    confirm_timeout: float = CONFIRM_TIMEOUT_OPTION,
) -> None:
    """Push the plan to the hosts over WinRM, idempotently, in stages.

    Reads each host's objects of the managed group, shows what would be
    created, changed and deleted, asks for confirmation and writes the run
    journal. Then: new and changed rules go in with Request on both sides,
    the pairs are verified, and only verified pairs are raised to the planned
    security; removed rules go last. A pair that fails verification stays in
    Request and is reported, so no pair ends with Require on one side only.
    A host whose change fails is rolled back to where it was; the other hosts
    go on. Objects outside the managed group are never touched.
    """
    the_inventory, the_plan = load_plan(inventory, limit)
    print_plan_warnings(the_plan)
    options = DeployOptions(
        dry_run=dry_run,
        yes=yes,
        forks=forks,
        attempts=attempts,
        journal_dir=journal_dir,
        lab=lab,
        lab_state=lab_state,
        verify=not no_verify,
        verify_timeout=verify_timeout,
        rollout=RolloutOptions(
            strict=strict,
            batch_size=batch_size,
            max_fail_percent=max_fail_percent,
            confirm_timeout=timedelta(minutes=confirm_timeout),
        ),
    )
    probe_ports = {p.name: p.probe_port for p in the_inventory.policies if p.probe_port}
    deploy(the_inventory, the_plan, "apply", str(inventory), options, probe_ports, plan_document=plan_to_json(the_plan))


def journal_has_run(journal_dir: Path, run_id: str | None) -> bool:
    """Return whether the journal contains the run, or any apply run when no id is given."""
    if run_id is not None:
        return (journal_dir / "runs" / run_id).is_dir()
    return any(found.kind == "apply" for found in list_runs(journal_dir))


@app.command(cls=PlainHelpCommand)
def revert(
    inventory: Path = INVENTORY_ARGUMENT,
    run: Optional[str] = typer.Option(None, "--run", help="Run id to revert (see 'ipsec-deploy runs'); default: the latest apply."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what the revert would change, then stop."),
    yes: bool = YES_OPTION,
    forks: int = FORKS_OPTION,
    attempts: int = ATTEMPTS_OPTION,
    journal_dir: Path = JOURNAL_OPTION,
    lab: bool = LAB_OPTION,
    lab_state: Optional[Path] = LAB_STATE_OPTION,
    no_verify: bool = typer.Option(
        False,
        "--no-verify",
        help="Restore the objects directly: no stages, no restore task and no verification.",
    ),
    verify_timeout: float = VERIFY_TIMEOUT_OPTION,
    confirm_timeout: float = CONFIRM_TIMEOUT_OPTION,
) -> None:
    """Restore every host a run changed to its managed objects from before that run.

    Uses the same stages as 'apply' (lower, request, verify and raise,
    remove), with the snapshots as the plan and mirrors found by address, so
    a second revert changes nothing, and the revert is journaled as a run of
    its own. The inventory supplies the connection settings of the hosts.
    """
    the_inventory, inventory_plan = load_plan(inventory, None)
    print_plan_warnings(inventory_plan)
    try:
        run_id, metadata, snapshots = load_snapshots(journal_dir, run)
    except JournalError as error:
        stderr.print(f"error: {error}", style="red", markup=False)
        if not journal_has_run(journal_dir, run):
            stderr.print(
                f"The journal directory is {journal_dir.resolve()}. If the apply ran in another directory "
                "or with --journal-dir, pass the same --journal-dir here.",
                markup=False,
            )
        raise typer.Exit(EXIT_FAILED) from None
    stdout.print(describe_reverted_run(run_id, metadata), markup=False)
    for later in later_changes(journal_dir, run_id, set(snapshots)):
        stderr.print(f"warning: {later}", style="yellow", markup=False)
    if run is None and not same_inventory(metadata.get("inventory"), inventory):
        # The latest apply changed hosts through another inventory; reverting
        # it by default would undo changes the admin did not name.
        stderr.print(
            f"error: the latest apply, run {run_id}, used {metadata.get('inventory')}, not {inventory}. "
            f"Pass --run {run_id} to revert it anyway, or the id of an apply of {inventory} "
            "('ipsec-deploy runs' lists them). Nothing was changed.",
            style="red", markup=False,
        )
        raise typer.Exit(EXIT_FAILED)
    if not snapshots:
        stdout.print(f"Run {run_id} changed no host; nothing to revert.")
        raise typer.Exit(EXIT_OK)

    missing = sorted(set(snapshots) - set(the_inventory.hosts))
    if missing:
        stderr.print(f"[red]error: run {run_id} changed hosts that are not in {inventory}: {', '.join(missing)}; use the inventory of that run ({metadata.get('inventory')})[/red]")
        raise typer.Exit(EXIT_FAILED)

    snapshot = snapshot_plan(
        str(inventory),
        metadata.get("managed_group", the_inventory.settings.managed_group),
        metadata.get("policy_store", the_inventory.settings.policy_store),
        {name: the_inventory.hosts[name] for name in snapshots},
        snapshots,
    )
    options = DeployOptions(
        dry_run=dry_run,
        yes=yes,
        forks=forks,
        attempts=attempts,
        journal_dir=journal_dir,
        lab=lab,
        lab_state=lab_state,
        verify=not no_verify,
        verify_timeout=verify_timeout,
        rollout=RolloutOptions(confirm_timeout=timedelta(minutes=confirm_timeout)),
    )
    # Pairs are named after the policies their rules came from, so the
    # inventory's probe ports still apply where the policy still exists.
    probe_ports = {p.name: p.probe_port for p in the_inventory.policies if p.probe_port}
    deploy(the_inventory, snapshot, "revert", str(inventory), options, probe_ports, reverts=run_id)


def later_changes(journal_dir: Path, run_id: str, hosts: set[str]) -> list[str]:
    """Describe the later runs that changed any of ``hosts``: reverting an older run undoes their changes too."""
    described = []
    for summary in list_runs(journal_dir):
        if summary.run_id <= run_id or summary.kind not in ("apply", "revert"):
            continue
        changed = sorted(host for host, info in summary.hosts.items() if host in hosts and info.get("status") == "changed")
        if changed:
            described.append(f"run {summary.run_id} ({summary.kind}) changed {', '.join(changed)} after this run; "
                             "the revert puts those hosts back to before this run, so it undoes that change too")
    return described


def print_plan_warnings(the_plan: Plan) -> None:
    """Print the inventory's and the plan's warnings on standard error, as file:line: warning: message."""
    for warning in the_plan.warnings:
        stderr.print(f"{warning.location}: warning: {warning.message}", style="yellow", markup=False)


def same_inventory(recorded: str | None, inventory: Path) -> bool:
    """Tell whether a run's recorded inventory path names this inventory file; a run without one counts as the same."""
    if not recorded:
        return True
    recorded_path = Path(recorded)
    if recorded_path.resolve() == inventory.resolve():
        return True
    try:
        return recorded_path.samefile(inventory)
    except OSError:
        return False


@app.command(cls=PlainHelpCommand)
def verify(
    inventory: Path = INVENTORY_ARGUMENT,
    limit: Optional[str] = LIMIT_OPTION,
    output_format: VerifyFormat = typer.Option(VerifyFormat.table, "--format", "-f", help="table: a table of pairs; json: a machine-readable report."),
    timeout: float = VERIFY_TIMEOUT_OPTION,
    forks: int = FORKS_OPTION,
    attempts: int = ATTEMPTS_OPTION,
    lab: bool = LAB_OPTION,
    lab_state: Optional[Path] = LAB_STATE_OPTION,
    renegotiate: bool = typer.Option(
        False, "--renegotiate",
        help="First remove the security associations between each probed pair, so that the probe negotiates "
             "afresh with the rules and crypto sets the hosts hold now. Without it, an SA negotiated earlier "
             "counts while it lasts. Connections between the pair pause briefly while they renegotiate.",
    ),
) -> None:
    """Prove that traffic between planned pairs is encrypted as planned.

    For each mirrored pair, sends traffic the rule covers (Test-NetConnection
    on a covered TCP port, or a ping for an ICMP exemption), then reads
    Get-NetIPsecMainModeSA and Get-NetIPsecQuickModeSA on both hosts and
    compares auth method and algorithms with the plan. For failing pairs it
    shows the reason from the IPsec audit events. Exit code 0 only if every
    pair is as planned.
    """
    the_inventory, the_plan = load_plan(inventory, limit)
    print_plan_warnings(the_plan)
    hosts = [host_plan.host for host_plan in the_plan.hosts]
    with host_access(the_inventory, hosts, lab, lab_state, attempts) as (connector, _):
        executor = Executor(connector, the_plan.policy_store, the_plan.managed_group, forks)
        sessions, errors = executor.connect_all(hosts)
        try:
            probe_ports = {p.name: p.probe_port for p in the_inventory.policies if p.probe_port}
            report = run_verification(the_plan, sessions, timeout, probe_ports, renegotiate, errors)
        finally:
            for session in sessions.values():
                session.close()

    # A run without a complete pair proves nothing, so it is no pass.
    nothing_verified = None if report.pairs else nothing_verified_message(the_plan, limited=limit is not None)
    if output_format == VerifyFormat.json:
        typer.echo(render_report_json(report, nothing_verified), nl=False)
    elif nothing_verified is None:
        print_report(report, stdout)
    else:
        print_report(report, stdout, nothing_verified)
    raise typer.Exit(EXIT_OK if report.passed and nothing_verified is None else EXIT_FAILED)


def nothing_verified_message(the_plan: Plan, limited: bool) -> str:
    """Explain why no pair was verified, and with --limit name the peers to add."""
    selected = [host_plan.host.name for host_plan in the_plan.hosts]
    peers = sorted({name for pair in the_plan.pairs for name in (pair.host_a, pair.host_b)} - set(selected))
    if limited and peers:
        return ("Nothing was verified: no mirrored pair has both of its hosts in the selection, and a pair needs both. "
                f"Include the peers, e.g. --limit {','.join(selected + peers)}")
    return ("Nothing was verified: the plan has no mirrored pair of two managed hosts to probe. Rules towards "
            "addresses outside the inventory's hosts cannot be verified from here; check them on the peer's side.")


@app.command(cls=PlainHelpCommand)
def runs(
    journal_dir: Path = JOURNAL_OPTION,
    output_format: VerifyFormat = typer.Option(VerifyFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """List the runs in the journal: run id, kind, time, hosts and result, oldest first."""
    found = list_runs(journal_dir)
    if output_format == VerifyFormat.json:
        typer.echo(json.dumps([{**asdict(run), "pending_confirmation": run.pending_hosts} for run in found], indent=2))
        return
    if not found:
        stdout.print(f"No runs in {journal_dir / 'runs'}.")
        return
    print_runs(found, stdout)


lab_app = typer.Typer(
    cls=PlainHelpGroup,
    help="Simulated Windows Server 2019 hosts for tests and demos. The lab is a test double, not Windows.",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")


@lab_app.command("up", cls=PlainHelpCommand)
def lab_up(
    inventory: Path = INVENTORY_ARGUMENT,
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="Directory of the lab hosts' state (kept between runs).", file_okay=False),
) -> None:
    """Serve the inventory's lab hosts on loopback until Ctrl-C.

    Each host is a WinRM listener that speaks WS-Management and PowerShell
    Remoting and emulates the NetSecurity cmdlets; data-plane addresses exist
    only inside the simulation. Point 'apply' and 'verify' at the same
    inventory from another terminal.
    """
    # The lab is imported only for lab commands: production code never needs it.
    from .lab.runner import serve_lab

    try:
        the_inventory = load_inventory(inventory)
    except InventoryError as error:
        report_inventory_error(error)
        raise typer.Exit(EXIT_FAILED) from None
    try:
        serve_lab(the_inventory, state_dir, stdout)
    except InventoryError as error:
        report_inventory_error(error, "the lab did not start")
        raise typer.Exit(EXIT_FAILED) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
