"""The plan as rich tables: one per host, then mirrored pairs, then warnings."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from ..objects import IPsecRule
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


def host_table(plan: Plan, host_plan: HostPlan) -> Table:
    host = host_plan.host
    table = Table(
        title=f"{host.name}  ({host.address}:{host.connection.effective_port} {host.connection.transport})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    table.add_column("Rule", overflow="fold")
    table.add_column("Local", overflow="fold", min_width=11)
    table.add_column("Remote", overflow="fold", min_width=11)
    table.add_column("Traffic", overflow="fold")
    table.add_column("Security")
    table.add_column("Auth / crypto")

    for rule in host_plan.rules:
        if rule.is_exemption:
            security = "exempt"
        elif rule.inbound_security == rule.outbound_security:
            security = rule.inbound_security
        else:
            security = f"in {rule.inbound_security}, out {rule.outbound_security}"
        auth = _short(rule.phase1_auth_set, plan.managed_group, "p1auth")
        if rule.phase2_auth_set:
            auth += " + " + _short(rule.phase2_auth_set, plan.managed_group, "p2auth")
        table.add_row(
            _short(rule.name, plan.managed_group, "rule"),
            "\n".join(rule.local_address) or "Any",
            "\n".join(rule.remote_address) or "Any",
            _traffic(rule),
            security,
            "-" if rule.is_exemption else f"{auth}\n{_short(rule.quick_mode_crypto_set, plan.managed_group, 'qmcrypto')}",
        )

    other = [obj for obj in host_plan.objects if not isinstance(obj, IPsecRule)]
    if other:
        table.caption = (
            f"Rule names start with {plan.managed_group}-rule-. The rules use "
            f"{len(other)} auth sets, crypto sets and main mode rules."
        )
        table.caption_justify = "left"
    return table


def print_plan(plan: Plan, console: Console) -> None:
    console.print(
        f"Plan for [bold]{len(plan.hosts)}[/bold] host(s), managed group "
        f"[bold]{plan.managed_group}[/bold], policy store [bold]{plan.policy_store}[/bold]"
    )
    for host_plan in plan.hosts:
        console.print()
        console.print(host_table(plan, host_plan))

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
