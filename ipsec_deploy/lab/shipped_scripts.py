"""Python counterparts of the scripts ipsec-deploy ships: read_state.ps1 and apply_changes.ps1.

The lab cannot run PowerShell, so each counterpart does what its script does
through the emulated cmdlets (``LabHost.invoke_checked``), and returns the
hashtables the script emits. Each counterpart records the SHA-256 of the
script text it was written for. When a script file no longer matches, its
counterpart is not registered, so the lab rejects the script and the tests
that send it fail until the counterpart is updated with the script.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ipsec_deploy.lab.clixml import TypedList
from ipsec_deploy.lab.netsecurity import errors
from ipsec_deploy.lab.netsecurity.host import LabHost
from ipsec_deploy.lab.netsecurity.objects import cim_class_of
from ipsec_deploy.lab.netsecurity.scripts import (
    DEFAULT_SCRIPTS,
    ScriptCounterpart,
    ScriptRegistry,
    normalize_script_text,
)
from ipsec_deploy.lab.pipeline import ErrorRecordValue, PSObjectValue

logger = logging.getLogger(__name__)

SCRIPTS_PACKAGE = "ipsec_deploy.scripts"
RUNTIME_EXCEPTION = "System.Management.Automation.RuntimeException"
ARRAY_LIST_TYPE_NAMES = ["System.Collections.ArrayList", "System.Object"]

# The script's $allowedCmdlets; PowerShell's -notcontains ignores case.
ALLOWED_CMDLETS = (
    "New-NetIPsecPhase1AuthSet", "Set-NetIPsecPhase1AuthSet", "Remove-NetIPsecPhase1AuthSet",
    "New-NetIPsecPhase2AuthSet", "Set-NetIPsecPhase2AuthSet", "Remove-NetIPsecPhase2AuthSet",
    "New-NetIPsecMainModeCryptoSet", "Set-NetIPsecMainModeCryptoSet", "Remove-NetIPsecMainModeCryptoSet",
    "New-NetIPsecQuickModeCryptoSet", "Set-NetIPsecQuickModeCryptoSet", "Remove-NetIPsecQuickModeCryptoSet",
    "New-NetIPsecMainModeRule", "Set-NetIPsecMainModeRule", "Remove-NetIPsecMainModeRule",
    "New-NetIPsecRule", "Set-NetIPsecRule", "Remove-NetIPsecRule",
    "New-NetIPsecAuthProposal", "New-NetIPsecMainModeCryptoProposal", "New-NetIPsecQuickModeCryptoProposal",
)
SET_CMDLETS = {
    "phase1_auth_set": "Get-NetIPsecPhase1AuthSet",
    "phase2_auth_set": "Get-NetIPsecPhase2AuthSet",
    "main_mode_crypto_set": "Get-NetIPsecMainModeCryptoSet",
    "quick_mode_crypto_set": "Get-NetIPsecQuickModeCryptoSet",
}


# PowerShell semantics the scripts rely on


def powershell_string(value: Any) -> str:
    """Convert a value as PowerShell's ``[string]`` cast does: $null is '', arrays join with spaces."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return " ".join(powershell_string(item) for item in value)
    if isinstance(value, PSObjectValue):
        return value.to_string if value.to_string is not None else value.type_names[0]
    return str(value)


def string_list(value: Any) -> list[str]:
    """Convert as the script's ConvertTo-StringList does: $null gives an empty list, a scalar a list of one."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [powershell_string(item) for item in items]


def hashtable_value(table: Any, key: str) -> Any:
    """Read ``$table.Key``: hashtable keys ignore case, and a missing key or $null table gives $null."""
    if not isinstance(table, dict):
        return None
    for name, value in table.items():
        if str(name).lower() == key.lower():
            return value
    return None


def foreach_items(value: Any) -> list[Any]:
    """List the items a ``foreach`` statement visits: none for $null, one for a scalar or hashtable."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def thrown_error(message: str) -> errors.CmdletError:
    """Build the error of ``throw "message"``, whose FullyQualifiedErrorId is the message itself."""
    record = ErrorRecordValue(
        message=message,
        fully_qualified_error_id=message,
        category="OperationStopped",
        exception_type=RUNTIME_EXCEPTION,
        target_name=message,
        reason="RuntimeException",
    )
    return errors.CmdletError(record, terminating=True)


def bind_script_parameters(script: str, parameters: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Bind a script's named parameters as PowerShell does for an advanced script with mandatory ones."""
    bound: dict[str, Any] = {}
    for raw_name, value in parameters.items():
        matches = [n for n in names if n.lower() == raw_name.lower()]
        if not matches:
            raise errors.parameter_not_found(script, raw_name)
        bound[matches[0]] = value
    missing = [n for n in names if n not in bound]
    if missing:
        raise errors.missing_mandatory(script, missing)
    return bound


# read_state.ps1


def _proposal_data(proposal: PSObjectValue) -> dict[str, str]:
    # A pre-shared key is a secret: it never leaves the host.
    # NOTE: on Windows, CimInstanceProperties hold raw CIM values, so enum
    # properties such as Encryption may read as numbers there; the lab's
    # proposals carry member names.
    data = {"CimClass": cim_class_of(proposal) or ""}
    for name, value in proposal.properties.items():
        if value is not None and name != "PreSharedKey":
            data[name] = powershell_string(value)
    return data


def _same_group(value: Any, group: str) -> bool:
    # PowerShell's -eq and -ne compare strings without case.
    return isinstance(value, str) and value.lower() == group.lower()


def read_state(host: LabHost, parameters: dict[str, Any], input: list[Any]) -> list[dict[str, Any]]:
    """Counterpart of read_state.ps1: every object of the managed group, and a summary of foreign rules."""
    bound = bind_script_parameters("read_state.ps1", parameters, ("Group", "PolicyStore"))
    group = powershell_string(bound["Group"])
    store = powershell_string(bound["PolicyStore"])
    # $env:COMPUTERNAME is the NetBIOS name: first DNS label, upper case, at most 15 characters.
    # Derived here, not with the client's netbios_name, so the check is not tested against itself.
    computer_name = host.name.split(".", 1)[0].upper()[:15]
    output: list[dict[str, Any]] = [{"Kind": "computer", "ComputerName": computer_name}]

    for kind, cmdlet in SET_CMDLETS.items():
        for item in host.invoke_checked(cmdlet, {"PolicyStore": store}):
            properties = item.properties
            if not _same_group(properties.get("Group"), group):
                continue
            data: dict[str, Any] = {
                "Kind": kind,
                "Name": powershell_string(properties.get("Name")),
                "DisplayName": powershell_string(properties.get("DisplayName")),
                "Description": powershell_string(properties.get("Description")),
                "Group": powershell_string(properties.get("Group")),
                "Proposals": TypedList([_proposal_data(p) for p in foreach_items(properties.get("Proposal"))],
                                       ARRAY_LIST_TYPE_NAMES),
            }
            if kind == "main_mode_crypto_set":
                data["MaxMinutes"] = powershell_string(properties.get("MaxMinutes"))
            if kind == "quick_mode_crypto_set":
                data["PerfectForwardSecrecyGroup"] = powershell_string(properties.get("PerfectForwardSecrecyGroup"))
            output.append(data)

    for rule in host.invoke_checked("Get-NetIPsecMainModeRule", {"PolicyStore": store}):
        properties = rule.properties
        if not _same_group(properties.get("Group"), group):
            continue
        addresses = _single_filter(host.invoke_checked("Get-NetFirewallAddressFilter", {}, input=[rule]))
        output.append({
            "Kind": "main_mode_rule",
            "Name": powershell_string(properties.get("Name")),
            "DisplayName": powershell_string(properties.get("DisplayName")),
            "Description": powershell_string(properties.get("Description")),
            "Group": powershell_string(properties.get("Group")),
            "Enabled": powershell_string(properties.get("Enabled")),
            "MainModeCryptoSet": powershell_string(properties.get("MainModeCryptoSet")),
            "Phase1AuthSet": powershell_string(properties.get("Phase1AuthSet")),
            "LocalAddress": string_list(addresses.get("LocalAddress")),
            "RemoteAddress": string_list(addresses.get("RemoteAddress")),
        })

    for rule in host.invoke_checked("Get-NetIPsecRule", {"PolicyStore": store}):
        properties = rule.properties
        addresses = _single_filter(host.invoke_checked("Get-NetFirewallAddressFilter", {}, input=[rule]))
        ports = _single_filter(host.invoke_checked("Get-NetFirewallPortFilter", {}, input=[rule]))
        data = {
            "Kind": "ipsec_rule",
            "Name": powershell_string(properties.get("Name")),
            "DisplayName": powershell_string(properties.get("DisplayName")),
            "Group": powershell_string(properties.get("Group")),
            "Enabled": powershell_string(properties.get("Enabled")),
            "Mode": powershell_string(properties.get("Mode")),
            "InboundSecurity": powershell_string(properties.get("InboundSecurity")),
            "OutboundSecurity": powershell_string(properties.get("OutboundSecurity")),
            "LocalAddress": string_list(addresses.get("LocalAddress")),
            "RemoteAddress": string_list(addresses.get("RemoteAddress")),
            "Protocol": powershell_string(ports.get("Protocol")),
            "LocalPort": string_list(ports.get("LocalPort")),
            "RemotePort": string_list(ports.get("RemotePort")),
        }
        if _same_group(properties.get("Group"), group):
            for name in ("Description", "Phase1AuthSet", "Phase2AuthSet", "QuickModeCryptoSet", "KeyModule"):
                data[name] = powershell_string(properties.get(name))
        else:
            # Rules the tool does not own are only summarised, for overlap warnings.
            data["Kind"] = "foreign_ipsec_rule"
        output.append(data)
    return output


def _single_filter(filters: list[Any]) -> dict[str, Any]:
    """Return the properties of a rule's one filter object; PowerShell reads $null's properties as $null."""
    return filters[0].properties if filters else {}


# apply_changes.ps1


def _invoke_operation(host: LabHost, operation: Any, allowed: tuple[str, ...] = ALLOWED_CMDLETS,
                      rejection: str = "ipsec-deploy does not run the cmdlet '{}'.") -> list[Any]:
    """Run one operation as the script's Invoke-Operation does: check the allow-list, build proposals, run with -ErrorAction Stop.

    ``allowed`` and ``rejection`` (a message with ``{}`` for the cmdlet) are
    the script's $allowedCmdlets and throw text; the restore script has its own.
    """
    command = powershell_string(hashtable_value(operation, "Cmdlet"))
    if command.lower() not in (name.lower() for name in allowed):
        raise thrown_error(rejection.format(command))

    # $parameters is a hashtable, so a proposal parameter replaces a plain
    # parameter of the same name whatever its case.
    parameters: dict[str, tuple[str, Any]] = {}
    plain_parameters = hashtable_value(operation, "Parameters")
    for key, value in (plain_parameters.items() if isinstance(plain_parameters, dict) else []):
        parameters[str(key).lower()] = (str(key), value)
    proposals = hashtable_value(operation, "Proposals")
    if isinstance(proposals, dict):
        for key, items in proposals.items():
            built: list[Any] = []
            for proposal in foreach_items(items):
                built += _invoke_operation(host, proposal, allowed, rejection)
            parameters[str(key).lower()] = (str(key), built)

    arguments: list[tuple[str | None, Any]] = list(parameters.values())
    arguments.append(("ErrorAction", "Stop"))
    return host.invoke_checked(command, arguments)


def apply_changes(host: LabHost, parameters: dict[str, Any], input: list[Any]) -> list[dict[str, Any]]:
    """Counterpart of apply_changes.ps1: run the operations in order, undo the applied ones on failure."""
    bound = bind_script_parameters("apply_changes.ps1", parameters, ("Operations",))
    operations = foreach_items(bound["Operations"])
    applied: list[Any] = []
    output: list[dict[str, Any]] = []

    for index, operation in enumerate(operations):
        try:
            _invoke_operation(host, operation)
        except errors.CmdletError as failure:
            undo_errors: list[str] = []
            for done in reversed(applied):
                for undo in foreach_items(hashtable_value(done, "Undo")):
                    try:
                        _invoke_operation(host, undo)
                    except errors.CmdletError as undo_failure:
                        undo_errors.append(undo_failure.record.message)
            output.append({
                "Index": index,
                "Status": "Failed",
                "Message": failure.record.message,
                "ErrorId": failure.record.fully_qualified_error_id,
                "Category": failure.record.category,
                "RolledBack": len(applied),
                "UndoErrors": undo_errors,
            })
            return output
        applied.append(operation)
        output.append({"Index": index, "Status": "Applied"})
    return output


# Registration


@dataclass(frozen=True)
class ShippedScript:
    """A script file ipsec-deploy ships, its counterpart, and the text digest the counterpart follows."""

    file_name: str
    counterpart: Callable[[LabHost, dict[str, Any], list[Any]], Any]
    sha256: str

    def text(self) -> str:
        return resources.files(SCRIPTS_PACKAGE).joinpath(self.file_name).read_text("utf-8")

    def current_sha256(self) -> str:
        return hashlib.sha256(normalize_script_text(self.text()).encode("utf-8")).hexdigest()


# Digests of the normalised script texts (no BOM, LF line ends). Update one
# only together with its counterpart above.
SHIPPED_SCRIPTS = (
    ShippedScript("read_state.ps1", read_state,
                  "b268320ad59a86352b36f60ff9e8020d308ffece84515dd1aa2b7a70bb9e7899"),
    ShippedScript("apply_changes.ps1", apply_changes,
                  "c6e675274d90fd29723b8b6be2cf141b1c2f24bf1f8d97e9ead77065c96df926"),
)


def register_shipped_scripts(registry: ScriptRegistry = DEFAULT_SCRIPTS) -> list[str]:
    """Register each shipped script whose text matches its counterpart; return the names of those that do not."""
    # Imported here because the verification counterparts build on this module.
    from ipsec_deploy.lab.shipped_restore_scripts import RESTORE_SHIPPED_SCRIPTS, register_restore_task_script
    from ipsec_deploy.lab.shipped_verify_scripts import VERIFY_SHIPPED_SCRIPTS

    stale = []
    for script in SHIPPED_SCRIPTS + VERIFY_SHIPPED_SCRIPTS + RESTORE_SHIPPED_SCRIPTS:
        if script.current_sha256() != script.sha256:
            logger.warning("the lab has no counterpart for the changed script %s; update %s",
                           script.file_name, __name__)
            stale.append(script.file_name)
            continue
        counterpart: ScriptCounterpart = script.counterpart
        registry.register(script.text(), counterpart)
    if "arm_restore.ps1" not in stale:
        register_restore_task_script(registry)
    return stale


_registered = False


def ensure_shipped_scripts_registered() -> None:
    """Register the shipped scripts in the default registry once per process."""
    global _registered
    if not _registered:
        register_shipped_scripts()
        _registered = True
