"""Python counterparts of the commit-confirmed restore scripts: arm_restore.ps1, disarm_restore.ps1, list_restores.ps1.

They keep the scheduled task and the files on the host in the lab's task
emulation (``ipsec_deploy.lab.netsecurity.tasks``). arm_restore.ps1 writes
restore.ps1 from a here-string in its own text. That text is registered
too, with ``restore_task`` as its counterpart, so the lab can run it when
the task is due. Like the other counterparts, these are registered only while the
script texts still have the digests they were written for.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from ipsec_deploy.lab.netsecurity import errors
from ipsec_deploy.lab.netsecurity.host import LabHost
from ipsec_deploy.lab.netsecurity.scripts import ScriptRegistry
from ipsec_deploy.lab.netsecurity.tasks import (
    PROGRAM_DATA,
    SYSTEM_ROOT,
    directory_exists,
    find_task,
    read_file,
    register_task,
    remove_directory,
    remove_file,
    subdirectories,
    unregister_task,
    write_file,
)
from ipsec_deploy.lab.pipeline import PSObjectValue
from ipsec_deploy.lab.shipped_scripts import (
    SCRIPTS_PACKAGE,
    ShippedScript,
    _invoke_operation,
    bind_script_parameters,
    foreach_items,
    hashtable_value,
    powershell_string,
    thrown_error,
)

# The scripts' -cnotmatch '^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}\z',
# used with fullmatch: case-sensitive, and no newline before the end.
RUN_ID_PATTERN = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}")
TASK_NAME_PREFIX = "ipsec-deploy-restore-"
ROOT = PROGRAM_DATA + "\\ipsec-deploy"
POWERSHELL = SYSTEM_ROOT + "\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# restore.ps1's $allowedCmdlets: creation cmdlets only.
RESTORE_CMDLETS = (
    "New-NetIPsecPhase1AuthSet", "New-NetIPsecPhase2AuthSet",
    "New-NetIPsecMainModeCryptoSet", "New-NetIPsecQuickModeCryptoSet",
    "New-NetIPsecMainModeRule", "New-NetIPsecRule",
    "New-NetIPsecAuthProposal", "New-NetIPsecMainModeCryptoProposal", "New-NetIPsecQuickModeCryptoProposal",
)
# restore.ps1's $removals: nouns in removal order and the parameter that names one object.
REMOVALS = (
    ("NetIPsecRule", "IPsecRuleName"),
    ("NetIPsecMainModeRule", "Name"),
    ("NetIPsecQuickModeCryptoSet", "Name"),
    ("NetIPsecMainModeCryptoSet", "Name"),
    ("NetIPsecPhase2AuthSet", "Name"),
    ("NetIPsecPhase1AuthSet", "Name"),
)


def embedded_restore_script(arm_text: str) -> str | None:
    """Return the text arm_restore.ps1 writes to restore.ps1: its here-string, plus the line end Set-Content adds."""
    match = re.search(r"^\$restoreScript = @'\n(.*?)\n'@$", arm_text.replace("\r\n", "\n"), re.MULTILINE | re.DOTALL)
    return match.group(1) + "\n" if match else None


def _arm_text() -> str:
    return resources.files(SCRIPTS_PACKAGE).joinpath("arm_restore.ps1").read_text("utf-8")


# Parameter binding and conversions, as PowerShell does them for these scripts


def _mandatory_string(script: str, name: str, value: Any) -> str:
    """Bind a mandatory [string] parameter: PowerShell rejects $null and the empty string."""
    if value is None:
        raise errors.binding_error(f"Cannot bind argument to parameter '{name}' because it is null.",
                                   "ParameterArgumentValidationErrorNullNotAllowed", script)
    text = powershell_string(value)
    if text == "":
        raise errors.binding_error(f"Cannot bind argument to parameter '{name}' because it is an empty string.",
                                   "ParameterArgumentValidationErrorEmptyStringNotAllowed", script)
    return text


def _datetime_parameter(script: str, name: str, value: Any) -> datetime:
    """Bind a [DateTime] parameter; the lab's hosts run on UTC, so a time without an offset is UTC."""
    if value is None:
        raise errors.binding_error(f"Cannot bind argument to parameter '{name}' because it is null.",
                                   "ParameterArgumentValidationErrorNullNotAllowed", script)
    if isinstance(value, datetime):
        moment = value
    else:
        text = powershell_string(value).strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            # NOTE: .NET parses more forms than ISO 8601 (for example
            # "1/15/2024 9:15"); the lab accepts ISO 8601 only.
            raise errors.binding_error(
                f"Cannot process argument transformation on parameter '{name}'. Cannot convert value "
                f"\"{text}\" to type \"System.DateTime\". Error: \"String was not recognized as a valid DateTime.\"",
                "ParameterArgumentTransformationError", script, text,
            ) from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _check_run_id(run_id: str, message: str) -> None:
    if RUN_ID_PATTERN.fullmatch(run_id) is None:
        raise thrown_error(message)


def _clixml_value(value: Any) -> Any:
    """Copy a parameter value into the JSON the lab stores for an Export-Clixml file."""
    if isinstance(value, dict):
        return {str(key): _clixml_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clixml_value(item) for item in value]
    if hasattr(value, "items") and isinstance(getattr(value, "items"), list):
        return [_clixml_value(item) for item in value.items]  # a TypedList
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, PSObjectValue):
        return powershell_string(value)
    return str(value)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(UTC_FORMAT)


def _paths(run_id: str) -> tuple[str, str, str, str]:
    directory = f"{ROOT}\\restore-{run_id}"
    return directory, directory + "\\restore.ps1", directory + "\\payload.xml", directory + "\\result.xml"


# arm_restore.ps1


def arm_restore(host: LabHost, parameters: dict[str, Any], input: list[Any]) -> list[dict[str, Any]]:
    """Counterpart of arm_restore.ps1: write the restore script and payload, register the task."""
    script = "arm_restore.ps1"
    bound = bind_script_parameters(script, parameters, ("RunId", "Group", "PolicyStore", "Restore", "Deadline"))
    run_id = _mandatory_string(script, "RunId", bound["RunId"])
    group = _mandatory_string(script, "Group", bound["Group"])
    store = _mandatory_string(script, "PolicyStore", bound["PolicyStore"])
    if bound["Restore"] is None:
        raise errors.binding_error("Cannot bind argument to parameter 'Restore' because it is null.",
                                   "ParameterArgumentValidationErrorNullNotAllowed", script)
    restore = foreach_items(bound["Restore"])
    deadline = _datetime_parameter(script, "Deadline", bound["Deadline"])

    _check_run_id(run_id, f"Invalid RunId '{run_id}': expected a run id such as 20240115T090000.000Z-0a1b2c.")
    now = host.network.clock.now()
    if deadline <= now:
        raise thrown_error(
            f"The restore deadline {deadline:%Y-%m-%d %H:%M:%S} UTC is not in the future; "
            f"the host's clock reads {now:%Y-%m-%d %H:%M:%S} UTC."
        )

    directory, script_path, payload_path, _ = _paths(run_id)
    task_name = TASK_NAME_PREFIX + run_id
    remove_directory(host, directory)
    restore_text = embedded_restore_script(_arm_text())
    write_file(host, script_path, "text", restore_text)
    write_file(host, payload_path, "clixml", {
        "RunId": run_id,
        "Group": group,
        "PolicyStore": store,
        "Deadline": deadline.isoformat(),
        "Restore": _clixml_value(restore),
    })
    register_task(host, {
        "TaskName": task_name,
        "TaskPath": "\\",
        "State": "Ready",
        "Description": f"ipsec-deploy: restore the managed IPsec objects from before run {run_id} "
                       "unless the run confirms its change.",
        "Execute": POWERSHELL,
        "Arguments": f"-NoProfile -NonInteractive -ExecutionPolicy Bypass -File \"{script_path}\" -RunId {run_id}",
        "UserId": "SYSTEM",
        "LogonType": "ServiceAccount",
        "RunLevel": "Highest",
        "StartBoundary": _utc_text(deadline),
        "StartWhenAvailable": True,
        "ExecutionTimeLimit": "PT30M",
        "Date": now.isoformat(),
        "Deadline": deadline.isoformat(),
        "LastRunTime": None,
    })
    return [{
        "RunId": run_id,
        "TaskName": task_name,
        "Deadline": _utc_text(deadline),
        "HostTime": _utc_text(now),
        "Directory": directory,
    }]


# restore.ps1 (written by arm_restore.ps1, run by the task)


def _same_group(value: Any, group: str) -> bool:
    # PowerShell's -ne compares strings without case.
    return isinstance(value, str) and value.lower() == group.lower()


def restore_task(host: LabHost, parameters: dict[str, Any], input: list[Any]) -> list[Any]:
    """Counterpart of restore.ps1: remove the managed group's objects, recreate the payload's, write result.xml."""
    script = "restore.ps1"
    bound = bind_script_parameters(script, parameters, ("RunId",))
    run_id = _mandatory_string(script, "RunId", bound["RunId"])
    _check_run_id(run_id, f"Invalid RunId '{run_id}'.")
    _, _, payload_path, result_path = _paths(run_id)

    failures: list[str] = []
    removed = 0
    created = 0
    deadline_text = ""
    payload_file = read_file(host, payload_path)
    try:
        if payload_file is None:
            raise thrown_error(f"Could not find file '{payload_path}'.")
        payload = payload_file["value"]
        group = powershell_string(hashtable_value(payload, "Group"))
        store = powershell_string(hashtable_value(payload, "PolicyStore"))
        deadline_text = _utc_text(datetime.fromisoformat(hashtable_value(payload, "Deadline")))
        for noun, name_parameter in REMOVALS:
            for item in host.invoke_checked(f"Get-{noun}", {"PolicyStore": store}):
                if not _same_group(item.properties.get("Group"), group):
                    continue
                name = powershell_string(item.properties.get("Name"))
                try:
                    host.invoke_checked(f"Remove-{noun}", [("PolicyStore", store), (name_parameter, name),
                                                           ("ErrorAction", "Stop")])
                    removed += 1
                except errors.CmdletError as error:
                    failures.append(f"Remove-{noun} '{name}': {error.record.message}")
        for operation in foreach_items(hashtable_value(payload, "Restore")):
            try:
                _invoke_operation(host, operation, RESTORE_CMDLETS,
                                  "ipsec-deploy does not run the cmdlet '{}' in a restore.")
                created += 1
            except errors.CmdletError as error:
                failures.append(f"{powershell_string(hashtable_value(operation, 'Cmdlet'))}: {error.record.message}")
    except errors.CmdletError as error:
        failures.append(error.record.message)

    write_file(host, result_path, "clixml", {
        "RunId": run_id,
        "Status": "Failed" if failures else "Restored",
        "Deadline": deadline_text,
        "Finished": _utc_text(host.network.clock.now()),
        "Removed": removed,
        "Created": created,
        "Errors": failures,
    })
    remove_file(host, payload_path)
    unregister_task(host, TASK_NAME_PREFIX + run_id)
    return []


# disarm_restore.ps1


def _result(host: LabHost, result_path: str) -> dict[str, Any] | None:
    entry = read_file(host, result_path)
    return entry["value"] if entry is not None else None


def disarm_restore(host: LabHost, parameters: dict[str, Any], input: list[Any]) -> list[dict[str, Any]]:
    """Counterpart of disarm_restore.ps1: unregister the task, remove the folder, report what was there."""
    script = "disarm_restore.ps1"
    bound = bind_script_parameters(script, parameters, ("RunId",))
    run_id = _mandatory_string(script, "RunId", bound["RunId"])
    _check_run_id(run_id, f"Invalid RunId '{run_id}': expected a run id such as 20240115T090000.000Z-0a1b2c.")
    directory, _, _, result_path = _paths(run_id)
    task_name = TASK_NAME_PREFIX + run_id

    previous_state = "Absent"
    failures: list[str] = []
    task = find_task(host, task_name)
    result = _result(host, result_path)
    if task is not None and task["TaskPath"] == "\\":
        previous_state = task["State"]
        unregister_task(host, task_name)
    elif result is not None:
        previous_state = powershell_string(hashtable_value(result, "Status"))
        failures = [powershell_string(e) for e in foreach_items(hashtable_value(result, "Errors"))]
    elif directory_exists(host, directory):
        previous_state = "Orphaned"
    remove_directory(host, directory)
    return [{"RunId": run_id, "PreviousState": previous_state, "Errors": failures}]


# list_restores.ps1


def list_restores(host: LabHost, parameters: dict[str, Any], input: list[Any]) -> list[dict[str, Any]]:
    """Counterpart of list_restores.ps1: pending tasks first, then folders of restores that ran or were left."""
    bind_script_parameters("list_restores.ps1", parameters, ())
    output: list[dict[str, Any]] = []
    listed: set[str] = set()
    tasks = sorted(host.state.scheduled_tasks.values(), key=lambda t: t["TaskName"].lower())
    for task in tasks:
        name = task["TaskName"]
        run_id = name[len(TASK_NAME_PREFIX):]
        # -cmatch: the prefix and the run id match with case.
        if task["TaskPath"] != "\\" or not name.startswith(TASK_NAME_PREFIX) or RUN_ID_PATTERN.fullmatch(run_id) is None:
            continue
        listed.add(run_id)
        output.append({"RunId": run_id, "Deadline": task["StartBoundary"], "State": task["State"],
                       "Finished": "", "Errors": []})

    for folder in subdirectories(host, ROOT):
        if not folder.startswith("restore-") or RUN_ID_PATTERN.fullmatch(folder[len("restore-"):]) is None:
            continue
        run_id = folder[len("restore-"):]
        if run_id in listed:
            continue
        result = _result(host, _paths(run_id)[3])
        if result is not None:
            output.append({
                "RunId": run_id,
                "Deadline": powershell_string(hashtable_value(result, "Deadline")),
                "State": powershell_string(hashtable_value(result, "Status")),
                "Finished": powershell_string(hashtable_value(result, "Finished")),
                "Errors": [powershell_string(e) for e in foreach_items(hashtable_value(result, "Errors"))],
            })
        else:
            output.append({"RunId": run_id, "Deadline": "", "State": "Orphaned", "Finished": "", "Errors": []})
    return output


# Registration


def register_restore_task_script(registry: ScriptRegistry) -> None:
    """Register the restore script that arm_restore.ps1 writes, so the lab can run the task."""
    text = embedded_restore_script(_arm_text())
    if text is not None:
        registry.register(text, restore_task)


# Digests of the normalised script texts; update one only together with its
# counterpart above. The digest of arm_restore.ps1 covers restore.ps1 too.
RESTORE_SHIPPED_SCRIPTS = (
    ShippedScript("arm_restore.ps1", arm_restore,
                  "ee7280a7ff4517cbb3a7bf09f6ea28b84b72283192ce6d748be73086a1ee1040"),
    ShippedScript("disarm_restore.ps1", disarm_restore,
                  "abd4d9fcfc91b4d172b552f5110b5b9d3749f02478e2bb9d9407b624a752a9da"),
    ShippedScript("list_restores.ps1", list_restores,
                  "e226296b8840f851d740a65545fb939db8f73a109a9d74cfcbde89068fa819e7"),
)
