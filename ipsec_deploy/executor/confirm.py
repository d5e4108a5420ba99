"""Commit-confirmed restore: a host restores its managed objects by itself unless the run confirms.

Before the first change on a host, ``arm_restore`` leaves on the host the
New- calls that recreate its managed objects from before the run, and a
scheduled task that runs a fixed restore script as SYSTEM at a deadline.
The restore removes every object of the managed group in the policy store
and recreates the snapshot. When the run has verified the host and can
still reach it, ``disarm_restore`` cancels the task and removes the files.
If the controller loses the host first (its own rules cut it off, the
network drops, the controller stops), the host restores itself at the
deadline. See docs/safety.md for what is left on the host.

NOTE: tested only against the lab, which emulates the scheduled task and
runs Python counterparts of the scripts; the scripts have not run on Windows.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..objects import KIND_ORDER, PlannedObject
from ..scripts import arm_restore_script, disarm_restore_script, list_restores_script
from ..transport.base import HostConnection, RemoteCommandFailed, RemoteError
from .payload import call_payload

# The form of journal.new_run_id(); the scripts check the same pattern.
RUN_ID_PATTERN = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}")
TASK_NAME_PREFIX = "ipsec-deploy-restore-"
# Task states (MSFT_ScheduledTask.State) of a restore that has not run yet.
PENDING_STATES = frozenset({"Ready", "Queued", "Disabled", "Unknown"})
# Task state of a restore that is running now: the host is being restored.
RUNNING_STATE = "Running"
# States of a restore that already ran, from its result file.
FINISHED_STATES = frozenset({"Restored", "Failed"})


@dataclass(frozen=True)
class ArmedRestore:
    """A restore armed on one host."""

    host: str
    run_id: str
    task_name: str
    deadline: datetime
    host_time: datetime | None  # the host's clock when armed; compare with the controller's for skew
    directory: str


@dataclass(frozen=True)
class DisarmResult:
    """The state of a run's restore that disarming found before it removed the task and files.

    ``previous_state`` is a task state (Ready, Queued, Running ...), Restored
    or Failed when the restore had already run, Orphaned for files without a
    task, or Absent.
    """

    host: str
    run_id: str
    previous_state: str
    errors: tuple[str, ...] = ()

    @property
    def restore_ran(self) -> bool:
        """Whether the host restored itself (or began to): the run's change is no longer in place."""
        return self.previous_state == RUNNING_STATE or self.previous_state in FINISHED_STATES


@dataclass(frozen=True)
class RestoreStatus:
    """One run's restore on a host: pending, running, finished, or orphaned files."""

    host: str
    run_id: str
    state: str
    deadline: datetime | None
    finished: datetime | None = None
    errors: tuple[str, ...] = ()

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it has the form of journal.new_run_id(); raise ValueError otherwise."""
    if not isinstance(run_id, str) or RUN_ID_PATTERN.fullmatch(run_id) is None:
        raise ValueError(f"invalid run id {run_id!r}: expected a run id such as 20240115T090000.000Z-0a1b2c")
    return run_id


def format_utc(moment: datetime) -> str:
    """Format an aware datetime as the scripts do: UTC, whole seconds, yyyy-MM-ddTHH:mm:ssZ."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"the time {moment.isoformat()} has no time zone; pass an aware datetime such as datetime.now(timezone.utc)")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str) -> datetime | None:
    """Parse the scripts' yyyy-MM-ddTHH:mm:ssZ; return None for an empty string."""
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def restore_operations(snapshot_objects: list[PlannedObject], policy_store: str, environment: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Build the Restore parameter of arm_restore: the New- calls that recreate the snapshot, sets before rules.

    Raises PayloadError for a pre-shared key whose environment variable is
    not set; a snapshot read from a host never carries the key itself.
    """
    ordered = sorted(snapshot_objects, key=lambda obj: (KIND_ORDER.index(obj.kind), obj.name))
    environment = dict(os.environ) if environment is None else environment
    return [call_payload(obj.new_call(policy_store), environment) for obj in ordered]


def _single_record(connection: HostConnection, script: str, records: list[Any]) -> dict[str, Any]:
    if len(records) != 1 or not isinstance(records[0], dict):
        raise RemoteCommandFailed(connection.host, script, [RemoteError(f"expected one hashtable, got {records!r:.200}")])
    return records[0]


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    return "" if value is None else str(value)


def _errors(record: dict[str, Any]) -> tuple[str, ...]:
    value = record.get("Errors")
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list) else [value]
    return tuple(str(item) for item in items)


def _parse_time(connection: HostConnection, script: str, text: str) -> datetime | None:
    try:
        return parse_utc(text)
    except ValueError:
        raise RemoteCommandFailed(connection.host, script, [RemoteError(f"unexpected time {text!r} in the output")]) from None


def arm_restore(connection: HostConnection, run_id: str, group: str, policy_store: str,
                snapshot_objects: list[PlannedObject], deadline: datetime,
                environment: dict[str, str] | None = None) -> ArmedRestore:
    """Leave on the host what restores ``snapshot_objects`` at ``deadline`` (an aware datetime), and schedule it.

    Arming the same run again replaces the files and the task, so a retry is
    safe. Raises ValueError for an invalid run id or a naive deadline, and
    PayloadError for a missing pre-shared key variable. Raises
    TransportError or RemoteCommandFailed when the host fails, which
    includes a deadline that is not in the future by the host's clock.
    After a failure, files may be left on the host, so call
    ``disarm_restore`` to remove them.
    """
    check_run_id(run_id)
    parameters = {
        "RunId": run_id,
        "Group": group,
        "PolicyStore": policy_store,
        "Restore": restore_operations(snapshot_objects, policy_store, environment),
        "Deadline": format_utc(deadline),
    }
    script = arm_restore_script()
    record = _single_record(connection, script.name, connection.run_script(script, parameters, retry=True))
    return ArmedRestore(
        host=connection.host,
        run_id=_text(record, "RunId"),
        task_name=_text(record, "TaskName"),
        deadline=_parse_time(connection, script.name, _text(record, "Deadline")) or deadline,
        host_time=_parse_time(connection, script.name, _text(record, "HostTime")),
        directory=_text(record, "Directory"),
    )


def disarm_restore(connection: HostConnection, run_id: str) -> DisarmResult:
    """Cancel the run's restore on the host and remove its files; succeed when there is nothing to remove.

    Check ``restore_ran`` on the result: when the deadline passed before
    this call, the host has already restored its objects from before the run.
    """
    check_run_id(run_id)
    script = disarm_restore_script()
    record = _single_record(connection, script.name, connection.run_script(script, {"RunId": run_id}, retry=True))
    return DisarmResult(connection.host, run_id, _text(record, "PreviousState"), _errors(record))


def list_restores(connection: HostConnection) -> list[RestoreStatus]:
    """Return every ipsec-deploy restore on the host: pending, running, finished or orphaned."""
    script = list_restores_script()
    statuses = []
    for record in connection.run_script(script, {}, retry=True):
        if not isinstance(record, dict):
            raise RemoteCommandFailed(connection.host, script.name, [RemoteError(f"expected hashtables, got {record!r:.200}")])
        statuses.append(RestoreStatus(
            host=connection.host,
            run_id=_text(record, "RunId"),
            state=_text(record, "State"),
            deadline=_parse_time(connection, script.name, _text(record, "Deadline")),
            finished=_parse_time(connection, script.name, _text(record, "Finished")),
            errors=_errors(record),
        ))
    return sorted(statuses, key=lambda status: status.run_id)


def pending_restores(connection: HostConnection) -> list[RestoreStatus]:
    """Return the restores on the host whose task has not run yet."""
    return [status for status in list_restores(connection) if status.pending]
