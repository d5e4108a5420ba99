"""The plan as rich tables: one per host, then mirrored pairs, then warnings."""

from __future__ import annotations

from collections import Counter

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..objects import IPsecRule, MainModeCryptoSet, MainModeRule, Phase1AuthSet, Phase2AuthSet, QuickModeCryptoSet
from ..planner.model import HostPlan, Plan


def _short(name: str | None, group: str, infix: str) -> str:
    """Strip the managed-group prefix so the table shows the profile name."""
    if not name:
        return "-"
    return name.removeprefix(f"{group}-{infix}-")


def _traffic(rule: IPsecRule) -> str:
    text = rule.protocol
    if rule.local_port:
        text += f" local {','.join(rule.local_port)}"
    if rule.remote_port:
        text += f" remote {','.join(rule.remote_port)}"
    return text


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _address_width(address_lists) -> int:
    return min(18, max((len(address) for addresses in address_lists for address in addresses), default=3))


def host_table(plan: Plan, host_plan: HostPlan) -> Table:
    host = host_plan.host
    table = Table(
        title=f"{host.name}  ({host.address}:{host.connection.effective_port} {host.connection.transport})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    # Rule names stay whole: a split name cannot be searched for on the
    # host. Security, auth set and quick mode crypto set go on short lines
    # under the name, in the same column, so a long name never squeezes
    # them and the table fits 80 columns for a typical inventory.
    table.add_column("Rule", no_wrap=True)
    # An IPv4 prefix is at most 18 characters, so only longer IPv6 addresses may fold.
    table.add_column("Local", overflow="fold", min_width=_address_width(rule.local_address for rule in host_plan.rules))
    table.add_column("Remote", overflow="fold", min_width=_address_width(rule.remote_address for rule in host_plan.rules))
    table.add_column("Traffic", overflow="fold")

    for rule in host_plan.rules:
        if rule.is_exemption:
            details = ["exempt"]
        elif rule.inbound_security == rule.outbound_security:
            details = [rule.inbound_security]
        else:
            details = [f"in {rule.inbound_security}", f"out {rule.outbound_security}"]
        if not rule.is_exemption:
            auth = _short(rule.phase1_auth_set, plan.managed_group, "p1auth")
            if rule.phase2_auth_set:
                auth += " + " + _short(rule.phase2_auth_set, plan.managed_group, "p2auth")
            details += [f"auth: {auth}", f"crypto: {_short(rule.quick_mode_crypto_set, plan.managed_group, 'qmcrypto')}"]
        name = _short(rule.name, plan.managed_group, "rule")
        table.add_row(
            Text(name) + Text("".join(f"\n  {line}" for line in details), style="dim"),
            "\n".join(rule.local_address) or "Any",
            "\n".join(rule.remote_address) or "Any",
            _traffic(rule),
        )

    return table


def supporting_objects_note(plan: Plan, host_plan: HostPlan) -> str:
    """Describe the objects besides the rules that the host must hold, with a count of each kind."""
    counts = Counter(obj.kind for obj in host_plan.objects)
    auth_sets = _count(counts[Phase1AuthSet.kind] + counts[Phase2AuthSet.kind], "auth set")
    crypto_sets = _count(counts[MainModeCryptoSet.kind] + counts[QuickModeCryptoSet.kind], "crypto set")
    main_mode_rules = _count(counts[MainModeRule.kind], "main mode rule")
    return (
        f"Rule names start with {plan.managed_group}-rule-. "
        f"The rules use {auth_sets}, {crypto_sets} and {main_mode_rules}."
    )


def print_plan(plan: Plan, console: Console) -> None:
    console.print(
        f"Plan for [bold]{len(plan.hosts)}[/bold] host(s), managed group "
        f"[bold]{plan.managed_group}[/bold], policy store [bold]{plan.policy_store}[/bold]"
    )
    for host_plan in plan.hosts:
        console.print()
        console.print(host_table(plan, host_plan))
        if host_plan.rules:
            console.print(supporting_objects_note(plan, host_plan))

    console.print()
    pairs = Table(title="Mirrored pairs", title_justify="left", box=box.SIMPLE_HEAD)
    pairs.add_column("Policy")
    pairs.add_column("Host A: rule")
    pairs.add_column("Host B: rule")
    for pair in plan.pairs:
        pairs.add_row(
            pair.policy,
            f"{pair.host_a}: {_short(pair.rule_a, plan.managed_group, 'rule')}",
            f"{pair.host_b}: {_short(pair.rule_b, plan.managed_group, 'rule')}",
        )
    if plan.pairs:
        console.print(pairs)
    else:
        console.print("No mirrored pairs: no policy connects two managed hosts.")

    if plan.warnings:
        console.print()
        console.print(f"[bold yellow]{len(plan.warnings)} warning(s)[/bold yellow]")
        for warning in plan.warnings:
            console.print(f"{warning.location}: {warning.message}", style="yellow", highlight=False, markup=False, emoji=False)
