"""Run a pipeline of structured commands and registered scripts against one host."""

from __future__ import annotations

import logging
from typing import Any

from ipsec_deploy.lab.netsecurity import errors
from ipsec_deploy.lab.netsecurity import (  # noqa: F401 (fill CMDLETS)
    filter_cmdlets,
    host_cmdlets,
    policy_cmdlets,
    proposal_cmdlets,
    tasks,
)
from ipsec_deploy.lab.netsecurity.binding import Binder, BoundCommand
from ipsec_deploy.lab.netsecurity.context import CMDLETS, CmdletContext
from ipsec_deploy.lab.netsecurity.faults import find_fault
from ipsec_deploy.lab.netsecurity.host import LabHost
from ipsec_deploy.lab.netsecurity.scripts import DEFAULT_SCRIPTS, ScriptRegistry
from ipsec_deploy.lab.netsecurity.spec import load_spec
from ipsec_deploy.lab.pipeline import CommandCall, PipelineRequest, PipelineResult

logger = logging.getLogger(__name__)

WRITE_VERBS = ("new", "set", "remove", "enable", "disable", "rename", "copy")
# New-* cmdlets that only build objects in memory and write nothing.
IN_MEMORY_CMDLETS = frozenset({
    "new-netipsecauthproposal", "new-netipsecmainmodecryptoproposal", "new-netipsecquickmodecryptoproposal",
})
# Cmdlets every Windows host has that the lab does not emulate. Any other
# unknown name gets PowerShell's CommandNotFoundException record.
WINDOWS_CORE_COMMANDS = frozenset(name.lower() for name in (
    "Select-Object", "Where-Object", "ForEach-Object", "Sort-Object", "Measure-Object", "Group-Object",
    "Out-String", "Out-Null", "Out-Default", "Write-Output", "Write-Host", "ConvertTo-Json", "ConvertFrom-Json",
    "Get-Date", "Get-Service", "Get-Item", "Get-ChildItem", "Get-Command", "Get-Module", "Import-Module",
    "Invoke-Command", "Invoke-Expression", "Get-NetFirewallRule", "New-NetFirewallRule", "Get-NetIPAddress",
    "Register-ScheduledTask", "Restart-Service", "gpupdate",
))
NAME_PARAMETERS = ("IPsecRuleName", "Name", "DisplayName", "NewName", "Group")


def is_write(command: str) -> bool:
    lowered = command.lower()
    return lowered.split("-", 1)[0] in WRITE_VERBS and lowered not in IN_MEMORY_CMDLETS and "netipsec" in lowered


def _object_names(bound: BoundCommand) -> list[str]:
    names: list[str] = []
    for parameter in NAME_PARAMETERS:
        value = bound.get(parameter)
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, list):
            names += [v for v in value if isinstance(v, str)]
    for instance in bound.get("InputObject", []) or []:
        for key in ("Name", "DisplayName"):
            value = instance.properties.get(key)
            if isinstance(value, str):
                names.append(value)
    return names


def _invoke_once(host: LabHost, bound: BoundCommand, output: list[Any], result: PipelineResult) -> None:
    ctx = CmdletContext(host, bound, output=output, errors=result.errors)
    call_number = host.next_call_number(bound.name)
    names = _object_names(bound)
    if bound.get("WhatIf"):
        return
    if is_write(bound.name):
        host.record_write(bound.name, names)

    try:
        fault = find_fault(host.faults, bound.name, call_number, names)
        if fault is not None:
            raise fault.to_error(bound.name, names[0] if names else "")
        CMDLETS[bound.name.lower()](ctx)
    except errors.CmdletError as error:
        if error.terminating:
            raise
        ctx.write_error(error)


def run_command(host: LabHost, command: str, arguments: list[tuple[str | None, Any]],
                input_items: list[Any] | None, result: PipelineResult, output: list[Any]) -> None:
    """Bind and run one cmdlet, once or once per input object; terminating errors raise CmdletError."""
    spec = load_spec()
    cmdlet = spec.cmdlet(command)
    if cmdlet is None:
        if command.lower() in WINDOWS_CORE_COMMANDS:
            raise errors.not_emulated(command)
        raise errors.command_not_found(command)
    if cmdlet.name.lower() not in CMDLETS:
        raise errors.not_emulated(cmdlet.name)

    binder = Binder(spec, cmdlet)
    if input_items is None:
        _invoke_once(host, binder.bind(arguments), output, result)
        return

    # Named arguments are bound before any input arrives, so their errors
    # stop the pipeline even when there is no input at all.
    named_only = binder.bind(arguments, expect_input=True)
    for item in input_items:
        try:
            bound = binder.bind(arguments, item)
        except errors.CmdletError as error:
            if error.terminating:
                raise
            CmdletContext(host, named_only, errors=result.errors).write_error(error)
            continue
        _invoke_once(host, bound, output, result)


def _run_script(host: LabHost, call: CommandCall, input_items: list[Any], scripts: ScriptRegistry,
                result: PipelineResult, output: list[Any]) -> None:
    counterpart = scripts.find(call.command)
    if counterpart is None:
        first_line = next((line.strip() for line in call.command.splitlines() if line.strip()), "")
        raise errors.script_not_allowed(first_line[:80])
    if any(name is None for name, _ in call.parameters):
        raise errors.binding_error(
            "The lab's script counterparts take named parameters only; pass each script argument "
            "with its parameter name.", "PositionalParameterNotFound", "",
        )
    parameters = {name: value for name, value in call.parameters if name is not None}

    try:
        returned = counterpart(host, parameters, input_items)
    except errors.CmdletError as error:
        raise errors.CmdletError(error.record, terminating=True) from error
    except Exception as error:  # a bug in a counterpart: report it as the pipeline's failure
        logger.exception("script counterpart %r failed on host %s", counterpart, host.name)
        raise errors.CmdletError(errors.error_record(
            f"The lab's counterpart of this script raised {type(error).__name__}: {error}",
            "LabScriptCounterpartFailed", "NotSpecified", "",
            exception_type="System.Management.Automation.RuntimeException",
        ), terminating=True) from error

    if isinstance(returned, PipelineResult):
        output.extend(returned.output)
        result.errors.extend(returned.errors)
        if returned.failure is not None or returned.state == "Failed":
            failure = returned.failure or errors.error_record(
                "The script failed.", "ScriptFailed", "NotSpecified", "")
            raise errors.CmdletError(failure, terminating=True)
    elif isinstance(returned, list):
        output.extend(returned)
    elif returned is not None:
        output.append(returned)


def run_pipeline(host: LabHost, request: PipelineRequest, scripts: ScriptRegistry | None = None) -> PipelineResult:
    """Run each command on the previous command's output, as PowerShell would without streaming.

    NOTE: commands run one after another, each over all of the previous
    command's output, rather than object by object. So a terminating error
    drops output that PowerShell would already have passed downstream.
    """
    scripts = scripts if scripts is not None else DEFAULT_SCRIPTS
    result = PipelineResult()
    items: list[Any] | None = list(request.input) if request.input else None

    for call in request.commands:
        output: list[Any] = []
        try:
            if call.is_script:
                _run_script(host, call, items or [], scripts, result, output)
            else:
                run_command(host, call.command, call.parameters, items, result, output)
        except errors.CmdletError as error:
            result.state = "Failed"
            result.failure = error.record
            if call is request.commands[-1]:
                result.output = output
            return result
        items = output

    result.output = items or []
    return result


def run_single_command(host: LabHost, command: str, arguments: list[tuple[str | None, Any]],
                       input_items: list[Any] | None = None) -> PipelineResult:
    request = PipelineRequest(commands=[CommandCall(command, False, arguments)], input=input_items or [])
    return run_pipeline(host, request)
