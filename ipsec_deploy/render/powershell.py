"""Render a host's planned objects as a PowerShell script for review or for running by hand.

Each object becomes a splatted New- cmdlet call (``New-NetIPsecRule @parameters``),
so there are no backtick line continuations to break. Every value is a
single-quoted literal with embedded quotes doubled, so no inventory value can
change the script's code. Proposals are created first with their New-*Proposal
cmdlets and passed to the set through a variable.
"""

from __future__ import annotations

from ..cmdlets import CmdletCall, ParameterValue, SecretFromEnvironment
from ..planner.model import HostPlan, Plan

# PowerShell treats these as single quotes too, so each must be doubled
# inside a single-quoted string.
_SINGLE_QUOTES = ("'", "\u2018", "\u2019", "\u201a", "\u201b")

_INDENT = "    "

# Windows PowerShell 5.1 reads a script file without a byte order mark in the
# ANSI code page. In Windows-1252 the UTF-8 bytes of a character such as
# U+0451 (D1 91) decode to U+00D1 U+2018, and U+2018 is a single quote that
# would end a quoted value, so script files are written as UTF-8 with a BOM.
SCRIPT_FILE_ENCODING = "utf-8-sig"


def quote(value: str) -> str:
    """Return a single-quoted PowerShell string literal for any text."""
    escaped = "".join(ch * 2 if ch in _SINGLE_QUOTES else ch for ch in value)
    return f"'{escaped}'"


def _inline_argument(value: ParameterValue) -> str:
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, SecretFromEnvironment):
        # The name was checked against [A-Za-z_][A-Za-z0-9_]* on load.
        return f"$env:{value.variable}"
    if isinstance(value, tuple):
        return "@(" + ", ".join(_inline_argument(v) for v in value) + ")"
    return quote(value)


def render_inline_call(call: CmdletCall) -> str:
    """Render a call on one line, switches as bare -Name; used for proposals."""
    parts = [call.name]
    for name, value in call.parameters:
        if value is True:
            parts.append(f"-{name}")
        else:
            parts.append(f"-{name} {_inline_argument(value)}")
    return " ".join(parts)


def render_call(call: CmdletCall, variable_prefix: str) -> list[str]:
    """Render one New- call with its proposals and a splatted parameter table."""
    lines: list[str] = []
    entries: list[tuple[str, str]] = []
    for name, value in call.parameters:
        if isinstance(value, tuple) and value and isinstance(value[0], CmdletCall):
            proposal_variable = f"${variable_prefix}Proposals"
            lines.append(f"{proposal_variable} = @(")
            for proposal in value:
                lines.append(f"{_INDENT}({render_inline_call(proposal)})")
            lines.append(")")
            entries.append((name, proposal_variable))
        else:
            entries.append((name, _inline_argument(value)))

    width = max(len(name) for name, _ in entries)
    lines.append(f"${variable_prefix}Parameters = @{{")
    for name, text in entries:
        lines.append(f"{_INDENT}{name.ljust(width)} = {text}")
    lines.append("}")
    lines.append(f"{call.name} @{variable_prefix}Parameters")
    return lines


def _variable_prefix(kind: str) -> str:
    head, *rest = kind.split("_")
    return head + "".join(word.capitalize() for word in rest)


def render_host_script(plan: Plan, host_plan: HostPlan) -> str:
    host = host_plan.host
    lines = [
        f"# ipsec-deploy: objects planned for {host.name} ({host.address})",
        f"# Inventory: {plan.inventory_path}",
        f"# Managed group: {plan.managed_group}; policy store: {plan.policy_store}",
        "#",
        "# Creates exactly the planned objects with the NetSecurity cmdlets of",
        "# Windows Server 2019. Run it in an elevated Windows PowerShell session on",
        "# the host, on a host where none of these objects exist yet: New- fails",
        "# on a name that is already taken, and the script stops at the first error.",
        "#Requires -RunAsAdministrator",
        "#Requires -Modules NetSecurity",
        "",
        "$ErrorActionPreference = 'Stop'",
    ]
    calls = [obj.new_call(plan.policy_store) for obj in host_plan.objects]
    variables = sorted({name for call in calls for name in _secret_variables(call)})
    if variables:
        # An unset variable would create the auth set with an empty key.
        lines += [
            "",
            "# Pre-shared keys come from these environment variables, never from this file.",
            f"foreach ($name in @({', '.join(quote(name) for name in variables)})) {{",
            f"{_INDENT}if (-not [Environment]::GetEnvironmentVariable($name)) {{",
            f"{_INDENT * 2}throw \"Set the environment variable $name to the pre-shared key before running this script.\"",
            f"{_INDENT}}}",
            "}",
        ]
    for obj, call in zip(host_plan.objects, calls):
        lines.append("")
        lines.append(f"# {obj.kind}: {obj.name}")
        lines.extend(render_call(call, _variable_prefix(obj.kind)))
    return "\n".join(lines) + "\n"


def _secret_variables(call: CmdletCall) -> list[str]:
    """Return the environment variables that a call and its proposals read secrets from."""
    names = []
    for _, value in call.parameters:
        values = value if isinstance(value, tuple) else (value,)
        for item in values:
            if isinstance(item, SecretFromEnvironment):
                names.append(item.variable)
            elif isinstance(item, CmdletCall):
                names.extend(_secret_variables(item))
    return names


def script_file_name(host_name: str) -> str:
    return f"{host_name}.ps1"
