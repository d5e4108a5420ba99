"""The interactive change flow that apply and revert share.

Read every host over one session each, show the diff, check the
management path, ask for confirmation, journal the run, apply it with the
staged rollout, and verify, always closing the sessions. This module owns
the consoles and exit codes of the command line; ``ipsec_deploy.cli``
defines the commands.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console
from rich.prompt import Confirm

from .executor.confirm import RestoreStatus, disarm_restore
from .executor.journal import DEFAULT_JOURNAL_DIR, RunJournal, mark_restore
from .executor.restore_records import record_finished_restores
from .executor.rollout import Rollout, RolloutOptions
from .executor.run import ChangeSet, Executor, overall_result
from .executor.state import HostState
from .inventory import Inventory, InventoryError
from .inventory.model import Host, is_domain_gpo
from .planner import Plan, management_path_problems
from .render.changes import ProgressEvents, print_change_set, print_results, print_rollout
from .render.verification import print_report
from .transport.base import RemoteCommandFailed, TransportError
from .transport.credentials import CredentialError, CredentialSource, FixedCredentials
from .transport.local_address import local_address_towards
from .transport.psrp import RetryPolicy, psrp_connector
from .verify.expectations import plan_probes
from .verify.run import Verifier, VerifyOptions

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as shells report a process ended by SIGINT

# No emoji codes: "file.yaml:100:" must not print as an emoji.
stdout = Console(highlight=False, emoji=False)
stderr = Console(stderr=True, highlight=False, emoji=False)


def report_inventory_error(error: InventoryError, outcome: str = "the inventory is invalid and nothing was planned") -> None:
    errors = [p for p in error.problems if p.severity == "error"]
    for problem in error.problems:
        # Problems quote inventory text, which must not be read as markup.
        stderr.print(str(problem), style="red" if problem.severity == "error" else "yellow", markup=False)
    stderr.print(f"[bold red]{len(errors)} error(s): {outcome}.[/bold red]")


def find_leftover_restores(change_set: ChangeSet) -> dict[str, list[RestoreStatus]]:
    """Return, by host, the restore tasks that earlier runs left armed, as the executor's read found them.

    Left in place, such a task would later put its host back to that run's
    snapshot and undo whatever this command does, so it is shown as a
    change, and removed once the admin confirms.
    """
    return {name: change.leftover_restores for name, change in sorted(change_set.changes.items()) if change.leftover_restores}


def remove_leftover_restores(change_set: ChangeSet, leftovers: dict[str, list[RestoreStatus]], journal_dir: Path) -> None:
    """Remove the listed restore tasks, and record in their runs' journals that they are gone."""
    for name, restores in sorted(leftovers.items()):
        connection = change_set.changes[name].connection
        for restore in restores:
            try:
                disarm_restore(connection, restore.run_id)
            except (TransportError, RemoteCommandFailed) as error:
                stderr.print(f"{name}: cannot remove the restore task of run {restore.run_id}: {error}", style="red", markup=False)
                continue
            mark_restore(journal_dir, restore.run_id, name, "removed")
            stdout.print(f"{name}: removed the pending restore task of run {restore.run_id}")


@contextmanager
def host_access(inventory: Inventory, hosts: list[Host], use_lab: bool, lab_state: Path | None, attempts: int = 3):
    """Yield (connector, lab) for the hosts; with --lab, start the lab for the duration.

    Password prompts for ``hosts`` happen here, before any progress display.
    """
    retry = RetryPolicy(attempts=attempts)
    if not use_lab:
        passwords = CredentialSource()
        try:
            passwords.ask_up_front(hosts)
        except CredentialError as error:
            # Nothing was contacted yet, so stopping here changes nothing. The
            # blank line ends the prompt's line, which Ctrl-D leaves open.
            stderr.print()
            stderr.print(f"error: {error}; nothing was changed.", style="red", markup=False)
            raise typer.Exit(EXIT_FAILED) from None
        yield psrp_connector(passwords, retry=retry), None
        return

    # The lab is imported only when asked for: production code never needs it.
    from .lab.runner import start_lab

    try:
        lab = start_lab(inventory, state_dir=lab_state)
    except InventoryError as error:
        report_inventory_error(error, "the lab did not start, and nothing was changed")
        raise typer.Exit(EXIT_FAILED) from None
    with lab:
        stderr.print("[dim]Using simulated lab hosts (a test double, not Windows).[/dim]")
        yield psrp_connector(FixedCredentials(lab.password), ca_bundle=lab.ca_file, retry=retry), lab


def confirm_or_exit(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        stderr.print("[red]error: refusing to change hosts without confirmation: there is no terminal to ask on; pass --yes[/red]")
        raise typer.Exit(EXIT_USAGE)
    if not Confirm.ask(question, console=stderr, default=False):
        stderr.print("Cancelled; nothing was changed.")
        raise typer.Exit(EXIT_OK)


def nothing_to_change(change_set: ChangeSet, lead: str) -> str:
    """Explain why there is nothing to apply, with the count of hosts that could not be read."""
    unread = len(change_set.unreachable)
    total = len(change_set.changes)
    if total and unread == total:
        return "No host could be read, so nothing was changed."
    if unread:
        return (
            f"{unread} of {total} host(s) could not be read and were not changed. "
            f"{lead} on the others: they already hold the objects this command wants."
        )
    return f"{lead}: every host already holds the objects this command wants."


def run_change(
    executor: Executor,
    targets: list,
    journal_dir: Path,
    kind: str,
    inventory_path: str,
    dry_run: bool,
    yes: bool,
    plan_document: dict | None = None,
    reverts: str | None = None,
    after_apply: Callable[[ChangeSet], bool] | None = None,
    apply_changes: Callable[[ChangeSet, RunJournal], list] | None = None,
    check_before_apply: Callable[[ChangeSet], list[str]] | None = None,
    host_options: list[str] | None = None,
) -> None:
    """Read, show, confirm, journal and apply; exits with the command's status.

    ``after_apply`` runs over the still-open sessions (verification) and
    returns whether it passed. ``host_options`` are the command-line options
    that chose the hosts (--lab, --lab-state), repeated in the revert hint.
    """
    host_options = host_options or []
    names = [host.name for host, _ in targets]
    change_set = None
    try:
        with ProgressEvents(stderr, names) as events:
            executor.events = events
            change_set = executor.prepare(targets)
        leftovers = find_leftover_restores(change_set)
        restores_by_host = {name: change.restores for name, change in change_set.changes.items()}
        for warning in record_finished_restores(restores_by_host, journal_dir):
            stderr.print(f"warning: {warning}", style="yellow", markup=False)
        print_change_set(change_set, stdout)
        for name, restores in sorted(leftovers.items()):
            for restore in restores:
                deadline = restore.deadline.isoformat(timespec="seconds") if restore.deadline else "an unknown time"
                stdout.print(f"{name}: - remove the restore task that run {restore.run_id} left armed (it would restore that run's snapshot at {deadline})", markup=False)
        unreachable = bool(change_set.unreachable)

        # Checked before the dry-run exit, so a dry run in the change window
        # shows what the real run would refuse.
        blockers = check_before_apply(change_set) if check_before_apply is not None else []
        for blocker in blockers:
            stderr.print(f"error: {blocker}", style="red", markup=False)
        if blockers and not dry_run:
            stderr.print("Refusing to apply: nothing was changed.", style="red")
            raise typer.Exit(EXIT_FAILED)

        if dry_run:
            stdout.print("Dry run: nothing was changed.")
            raise typer.Exit(EXIT_FAILED if unreachable or blockers else EXIT_OK)
        if not change_set.has_changes and not leftovers:
            stdout.print(nothing_to_change(change_set, "No changes"))
            raise typer.Exit(EXIT_FAILED if unreachable else EXIT_OK)

        hosts_to_change = len({c.host.name for c in change_set.changes.values() if c.operations} | set(leftovers))
        confirm_or_exit(yes, f"Apply these changes to {hosts_to_change} host(s)?")
        remove_leftover_restores(change_set, leftovers, journal_dir)
        if not change_set.has_changes:
            stdout.print(nothing_to_change(change_set, "No other changes"))
            raise typer.Exit(EXIT_FAILED if unreachable else EXIT_OK)

        journal = RunJournal.create(journal_dir, kind, inventory_path, executor.policy_store, executor.group, reverts)
        if plan_document is not None:
            journal.write_plan(plan_document)
        try:
            with ProgressEvents(stderr, names) as events:
                executor.events = events
                if apply_changes is not None:
                    results = apply_changes(change_set, journal)
                else:
                    results = executor.apply(change_set, journal)
        except KeyboardInterrupt:
            journal.finish("interrupted")
            words = ["ipsec-deploy", "revert", inventory_path, "--run", journal.run_id]
            if journal_dir != Path(DEFAULT_JOURNAL_DIR):
                words += ["--journal-dir", str(journal_dir)]
            words += host_options
            # Quoted for the shell the user runs in: cmd.exe and PowerShell take double quotes.
            revert = subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)
            stderr.print(f"Interrupted. Each host is at a completed stage; this restores the hosts: {revert}", style="red", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        result = overall_result(results)
        journal.finish(result)
        # Counted from the journal, so stages, failures and --strict restores all count.
        for host_result in results:
            host_result.operations = journal.applied_writes(host_result.host)
        print_results(results, stdout, journal.run_id, staged=apply_changes is not None)
        stdout.print(f"Journal: {journal.directory}")
        verified = after_apply(change_set) if after_apply is not None else True
    finally:
        if change_set is not None:
            change_set.close()

    raise typer.Exit(EXIT_FAILED if result == "failed" or not verified else EXIT_OK)


@dataclass(frozen=True)
class DeployOptions:
    """The command-line choices shared by apply and revert."""

    dry_run: bool
    yes: bool
    forks: int
    attempts: int
    journal_dir: Path
    lab: bool
    lab_state: Path | None
    verify: bool
    verify_timeout: float
    rollout: RolloutOptions


def deploy(
    the_inventory: Inventory,
    the_plan: Plan,
    kind: str,
    inventory_path: str,
    options: DeployOptions,
    probe_ports: dict[str, int],
    plan_document: dict | None = None,
    reverts: str | None = None,
) -> None:
    """Move the plan's hosts to the plan's objects with the staged rollout, then verify; exits with the status."""
    if is_domain_gpo(the_plan.policy_store):
        # Every host would write its own objects into the one shared GPO and delete the others'.
        fix = ("Use PersistentStore (or localhost) in the inventory." if kind == "apply" else
               "The run used that store, so restore the GPO with the Group Policy tools instead.")
        stderr.print(
            f"error: policy_store '{the_plan.policy_store}' is a domain GPO, which the hosts share; {kind} writes "
            f"each host's objects separately and would overwrite the other hosts' objects in it. {fix} "
            "Nothing was changed.",
            style="red", markup=False,
        )
        raise typer.Exit(EXIT_FAILED)
    targets = [(host_plan.host, host_plan.objects) for host_plan in the_plan.hosts]
    # Rules the rollout left in Request or did not change: the plan is not met for them.
    rules_not_as_planned: list[str] = []

    def sessions_of(change_set: ChangeSet) -> dict:
        return {name: c.connection for name, c in change_set.changes.items() if c.connection is not None}

    def verify_after_apply(change_set: ChangeSet) -> bool:
        if not options.verify:
            return True
        stdout.print()
        report = run_verification(the_plan, sessions_of(change_set), options.verify_timeout, probe_ports)
        if any(host_plan.rules for host_plan in the_plan.hosts):
            print_report(report, stdout)
        else:
            print_report(report, stdout, "Nothing to verify: after this run the hosts hold no rules of the managed group.")
        # A rule left in Request is not at the planned security, whatever
        # its SAs show.
        return report.passed and not rules_not_as_planned

    def staged_rollout(change_set: ChangeSet, journal: RunJournal) -> list:
        verifier = Verifier(
            sessions_of(change_set),
            the_plan.managed_group,
            the_plan.policy_store,
            VerifyOptions(timeout=options.verify_timeout, renegotiate=True, check_security=False),
        )

        def verify_pairs(hosts: list[str], rules: set[tuple[str, str]], states: dict[str, HostState]) -> list:
            probes = [
                p
                for p in plan_probes(the_plan, probe_ports)
                if p.initiator in hosts
                and p.responder in hosts
                and ((p.initiator, p.initiator_rule) in rules or (p.responder, p.responder_rule) in rules)
            ]
            return verifier.verify(the_plan, probes, states).pairs

        in_run = {host_plan.host.name for host_plan in the_plan.hosts}
        outside = tuple(host for name, host in sorted(the_inventory.hosts.items()) if name not in in_run)
        report = Rollout(executor, the_plan, journal, options.rollout, outside).run(change_set, verify_pairs)
        rules_not_as_planned.extend(report.held_in_request + report.kept_unchanged)
        if report.held_in_request:
            journal.record_held_in_request(report.held_in_request)
        print_rollout(report, stdout)
        return list(report.results.values())

    hosts = [host_plan.host for host_plan in the_plan.hosts]
    with host_access(the_inventory, hosts, options.lab, options.lab_state, options.attempts) as (connector, running_lab):

        def management_check(change_set: ChangeSet) -> list[str]:
            # The controller's address towards each host is the source
            # address of the WinRM traffic the host receives. With --lab,
            # the lab's simulated controller address is used instead.
            addresses: list = list(the_inventory.controller)
            for change in change_set.changes.values():
                if change.reachable:
                    local = local_address_towards(change.host.address, change.host.connection.effective_port)
                    if local:
                        addresses.append(local)
            if running_lab is not None and running_lab.topology.controller_address:
                addresses.append(running_lab.topology.controller_address)
            conflicts = management_path_problems(the_plan, addresses)
            return [conflict.describe(the_inventory.settings.management_exemption) for conflict in conflicts]

        executor = Executor(connector, the_plan.policy_store, the_plan.managed_group, options.forks)
        run_change(
            executor,
            targets,
            options.journal_dir,
            kind,
            inventory_path,
            options.dry_run,
            options.yes,
            plan_document,
            reverts=reverts,
            after_apply=verify_after_apply,
            # Without verification there is nothing to raise pairs on, so
            # --no-verify applies the objects directly.
            apply_changes=staged_rollout if options.verify else None,
            check_before_apply=management_check,
            host_options=lab_options(options),
        )


def lab_options(options: DeployOptions) -> list[str]:
    """Return the options that select the lab, for a command printed for the user to run next."""
    if not options.lab:
        return []
    return ["--lab"] + (["--lab-state", str(options.lab_state)] if options.lab_state is not None else [])


def run_verification(the_plan: Plan, sessions: dict, timeout: float, probe_ports: dict[str, int], renegotiate: bool = False,
                     connect_errors: dict[str, str] | None = None):
    options = VerifyOptions(timeout=timeout, renegotiate=renegotiate)
    verifier = Verifier(sessions, the_plan.managed_group, the_plan.policy_store, options)
    with stderr.status("Verifying: probing pairs and reading security associations"):
        return verifier.verify(the_plan, plan_probes(the_plan, probe_ports), host_errors=connect_errors)
