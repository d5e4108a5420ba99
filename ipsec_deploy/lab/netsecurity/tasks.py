"""Scheduled tasks and files of a lab host, Get-ScheduledTask, and running tasks that are due.

The lab keeps both in the host's saved state (``HostState.scheduled_tasks``
and ``HostState.files``), so they persist across commands like the rest of
the host. A task runs once when the lab clock reaches its deadline: its
action must be ``powershell.exe ... -File "<path>" -Name value ...`` naming a
file whose text is a registered script, and the lab calls that script's
counterpart with the named arguments. The lab checks for due tasks when
``LabClock.advance`` or ``set`` moves time, at the start of every pipeline,
and when ``LabNetwork.run_due_tasks()`` is called.

NOTE: the lab's hosts run on UTC, so a trigger's StartBoundary is written as
UTC with a Z; Windows writes local time. File ACLs, task history, the
Task Scheduler's start delay and run time limits are not emulated.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ipsec_deploy.lab.netsecurity import errors
from ipsec_deploy.lab.netsecurity.binding import has_wildcards, wildcard_match
from ipsec_deploy.lab.netsecurity.context import CmdletContext, cmdlet
from ipsec_deploy.lab.pipeline import PSObjectValue

if TYPE_CHECKING:
    from ipsec_deploy.lab.netsecurity.host import LabHost

logger = logging.getLogger(__name__)

PROGRAM_DATA = "C:\\ProgramData"
SYSTEM_ROOT = "C:\\Windows"
TASK_NAMESPACE = "Root/Microsoft/Windows/TaskScheduler"
CIM_INSTANCE = "Microsoft.Management.Infrastructure.CimInstance"
# The part of a task's arguments after powershell.exe's own switches.
FILE_ARGUMENT = re.compile(r'-File\s+"(?P<path>[^"]+)"(?P<rest>.*)$', re.DOTALL)
SCRIPT_ARGUMENT = re.compile(r"-(?P<name>[A-Za-z]+)\s+(?P<value>\S+)")


# Files


def write_file(host: LabHost, path: str, kind: str, value: Any) -> None:
    """Store a file: ``kind`` is "text" for Set-Content or "clixml" for Export-Clixml, with a JSON-safe value."""
    host.state.files[path.lower()] = {"path": path, "kind": kind, "value": value}


def read_file(host: LabHost, path: str) -> dict[str, Any] | None:
    return host.state.files.get(path.lower())


def remove_file(host: LabHost, path: str) -> None:
    host.state.files.pop(path.lower(), None)


def directory_exists(host: LabHost, path: str) -> bool:
    """Return whether any file lies under ``path``; the lab has no empty folders."""
    prefix = path.lower().rstrip("\\") + "\\"
    return any(key.startswith(prefix) for key in host.state.files)


def remove_directory(host: LabHost, path: str) -> None:
    """Remove a folder and everything under it, as Remove-Item -Recurse -Force does."""
    prefix = path.lower().rstrip("\\") + "\\"
    for key in [key for key in host.state.files if key.startswith(prefix)]:
        del host.state.files[key]


def subdirectories(host: LabHost, path: str) -> list[str]:
    """Return the names of the folders directly under ``path``, as Get-ChildItem -Directory lists them."""
    prefix = path.lower().rstrip("\\") + "\\"
    names: dict[str, str] = {}
    for entry in host.state.files.values():
        full = entry["path"]
        if full.lower().startswith(prefix) and "\\" in full[len(prefix):]:
            name = full[len(prefix):].split("\\", 1)[0]
            names.setdefault(name.lower(), name)
    return sorted(names.values())


# Tasks


def register_task(host: LabHost, task: dict[str, Any]) -> None:
    """Register or replace a task, as Register-ScheduledTask -Force does."""
    host.state.scheduled_tasks[task["TaskName"].lower()] = task


def find_task(host: LabHost, name: str) -> dict[str, Any] | None:
    return host.state.scheduled_tasks.get(name.lower())


def unregister_task(host: LabHost, name: str) -> None:
    host.state.scheduled_tasks.pop(name.lower(), None)


def _deadline(task: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(task["Deadline"])


def _cim_instance(cim_class: str, properties: dict[str, Any]) -> PSObjectValue:
    return PSObjectValue(
        type_names=[
            f"{CIM_INSTANCE}#{TASK_NAMESPACE}/{cim_class}",
            f"{CIM_INSTANCE}#{cim_class}",
            CIM_INSTANCE,
            "System.Object",
        ],
        properties=properties,
        to_string=cim_class,
    )


def render_task(task: dict[str, Any]) -> PSObjectValue:
    """Render a task as the MSFT_ScheduledTask instance Get-ScheduledTask returns (a subset of its properties)."""
    action = _cim_instance("MSFT_TaskExecAction", {
        "Id": None, "Arguments": task["Arguments"], "Execute": task["Execute"], "WorkingDirectory": None,
    })
    trigger = _cim_instance("MSFT_TaskTimeTrigger", {
        "Enabled": True, "EndBoundary": None, "ExecutionTimeLimit": None, "Id": None,
        "StartBoundary": task["StartBoundary"], "RandomDelay": None,
    })
    principal = _cim_instance("MSFT_TaskPrincipal2", {
        "DisplayName": None, "GroupId": None, "Id": "Author", "LogonType": task["LogonType"],
        "RunLevel": task["RunLevel"], "UserId": task["UserId"],
    })
    settings = _cim_instance("MSFT_TaskSettings3", {
        "StartWhenAvailable": task["StartWhenAvailable"], "ExecutionTimeLimit": task["ExecutionTimeLimit"],
    })
    return _cim_instance("MSFT_ScheduledTask", {
        "Actions": [action],
        "Author": task.get("Author"),
        "Date": task.get("Date"),
        "Description": task["Description"],
        "Principal": principal,
        "Settings": settings,
        "State": task["State"],
        "TaskName": task["TaskName"],
        "TaskPath": task["TaskPath"],
        "Triggers": [trigger],
        "URI": task["TaskPath"] + task["TaskName"],
    })


@cmdlet("Get-ScheduledTask")
def get_scheduled_task(ctx: CmdletContext) -> None:
    for parameter in ("CimSession", "AsJob"):
        if ctx.bound.has(parameter):
            raise errors.not_emulated(f"{ctx.command} -{parameter}")
    tasks = sorted(ctx.host.state.scheduled_tasks.values(), key=lambda t: (t["TaskPath"], t["TaskName"].lower()))
    for parameter, field_name in (("TaskName", "TaskName"), ("TaskPath", "TaskPath")):
        if not ctx.bound.has(parameter):
            continue
        selected = []
        for pattern in ctx.bound.get(parameter):
            matched = [t for t in tasks if wildcard_match(pattern, t[field_name]) and t not in selected]
            if not matched and not has_wildcards(pattern):
                ctx.write_error(errors.object_not_found(ctx.command, "MSFT_ScheduledTask", parameter, pattern))
            selected += matched
        tasks = selected
    for task in tasks:
        ctx.output.append(render_task(task))


def run_due_tasks(host: LabHost) -> list[str]:
    """Run every task of the host whose deadline has passed and that has not run; return their names."""
    now = host.network.clock.now()
    ran = []
    for task in sorted(host.state.scheduled_tasks.values(), key=_deadline):
        if task.get("LastRunTime") is None and _deadline(task) <= now:
            _run_task(host, task)
            ran.append(task["TaskName"])
    return ran


def _run_task(host: LabHost, task: dict[str, Any]) -> None:
    # Imported here because the counterparts import this package.
    from ipsec_deploy.lab.netsecurity.scripts import DEFAULT_SCRIPTS
    from ipsec_deploy.lab.shipped_scripts import ensure_shipped_scripts_registered

    ensure_shipped_scripts_registered()
    task["LastRunTime"] = host.network.clock.now().isoformat()
    match = FILE_ARGUMENT.search(task["Arguments"])
    script = read_file(host, match.group("path")) if match else None
    counterpart = DEFAULT_SCRIPTS.find(script["value"]) if script is not None and script["kind"] == "text" else None
    if match is None or counterpart is None:
        task["LastTaskResult"] = "The task's script file is missing or is not a script the lab knows."
        logger.warning("host %s: scheduled task %s did not run: %s", host.name, task["TaskName"], task["LastTaskResult"])
        return

    parameters = {m.group("name"): m.group("value") for m in SCRIPT_ARGUMENT.finditer(match.group("rest"))}
    logger.info("host %s: running scheduled task %s", host.name, task["TaskName"])
    try:
        counterpart(host, parameters, [])
        task["LastTaskResult"] = "0"
    except errors.CmdletError as error:
        # The task may have unregistered itself before failing.
        task["LastTaskResult"] = error.record.message
        logger.warning("host %s: scheduled task %s failed: %s", host.name, task["TaskName"], error.record.message)
