"""Verification reports as a rich table or JSON."""

from __future__ import annotations

import json
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..verify.classify import CLEAR, DIFFERENT, ENCRYPTED, EXEMPT, FAILING, NOT_EXEMPT, ONE_SIDED, RULE_DIFFERS, RULE_MISSING, SKIPPED
from ..verify.run import VerifyReport

_COLOURS = {ENCRYPTED: "green", EXEMPT: "green", DIFFERENT: "yellow", SKIPPED: "yellow", CLEAR: "red", FAILING: "red", ONE_SIDED: "red", NOT_EXEMPT: "red", RULE_MISSING: "red", RULE_DIFFERS: "red"}


NO_COMPLETE_PAIR = "No pair to verify: no mirrored pair has both of its hosts in this command."


def print_report(report: VerifyReport, console: Console, no_pairs_message: str = NO_COMPLETE_PAIR) -> None:
    """Print the pairs as a table, then findings, host errors and a verdict.

    Without pairs, ``no_pairs_message`` replaces the table and the verdict.
    """
    if not report.pairs:
        for finding in report.exemption_findings:
            console.print(f"[red]{escape(finding)}[/red]")
        for host, error in sorted(report.host_errors.items()):
            console.print(f"[red]{host}: not verified: {escape(error)}[/red]")
        console.print(no_pairs_message, markup=False)
        return
    table = Table(title="Verification", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("Policy")
    table.add_column("Pair (probe)", overflow="fold")
    table.add_column("Status")
    table.add_column("Detail", overflow="fold")
    for result in report.pairs:
        colour = _COLOURS.get(result.status, "default")
        detail = result.negotiated if result.status == ENCRYPTED else result.reason
        if result.status == DIFFERENT and result.negotiated:
            detail += f" (negotiated: {result.negotiated})"
        for event in result.events:
            detail += f"\n{event}"
        table.add_row(result.probe.policy, result.probe.label, f"[{colour}]{result.status}[/{colour}]", escape(detail))
    console.print(table)

    for finding in report.exemption_findings:
        console.print(f"[red]{escape(finding)}[/red]")
    for host, error in sorted(report.host_errors.items()):
        console.print(f"[red]{host}: not verified: {escape(error)}[/red]")
    passed = sum(1 for r in report.pairs if r.passed)
    verdict = "[green]every pair is as planned[/green]" if report.passed else "[red]some pairs or hosts are not as planned[/red]"
    console.print(f"{passed} of {len(report.pairs)} pair(s) as planned: {verdict}")


def report_to_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "passed": report.passed,
        "pairs": [
            {
                "policy": r.probe.policy,
                "initiator": {"host": r.probe.initiator, "address": r.probe.initiator_address, "rule": r.probe.initiator_rule},
                "responder": {"host": r.probe.responder, "address": r.probe.responder_address, "rule": r.probe.responder_rule},
                "protocol": r.probe.protocol,
                "port": r.probe.port,
                "exemption": r.probe.exemption,
                "status": r.status,
                "passed": r.passed,
                "reason": r.reason,
                "negotiated": r.negotiated,
                "events": r.events,
            }
            for r in report.pairs
        ],
        "exemption_findings": report.exemption_findings,
        "host_errors": report.host_errors,
    }


def render_report_json(report: VerifyReport, nothing_verified: str | None = None) -> str:
    """Return the report as JSON; ``nothing_verified`` explains a report without pairs, which then does not pass."""
    document = report_to_json(report)
    if nothing_verified is not None:
        document["passed"] = False
        document["nothing_verified"] = nothing_verified
    return json.dumps(document, indent=2) + "\n"
