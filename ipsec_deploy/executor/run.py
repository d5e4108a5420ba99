"""Apply desired objects to hosts: read, diff, confirm, journal, apply in parallel.

``apply`` and ``revert`` share this machinery; they differ only in where the
desired objects come from (the plan, or a run's snapshots).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..inventory.model import Host
from ..objects import IPsecRule, PlannedObject
from ..planner.traffic import addresses_overlap, ports_overlap, protocols_overlap
from ..scripts import apply_changes_script, read_state_script
from ..transport.base import HostConnection, RemoteCommandFailed, TransportError
from ..transport.credentials import CredentialError
from .confirm import RestoreStatus, list_restores
from .diff import Operation, diff_host, with_secret_names
from .journal import RunJournal
from .payload import PayloadError, operations_payload
from .state import HostState, StateError, parse_host_state, wrong_host_reason

log = logging.getLogger("ipsec_deploy.executor")

Connector = Callable[[Host], HostConnection]


class ExecutorEvents(Protocol):
    """Progress callbacks; the CLI draws them, tests may ignore them."""

    def host_status(self, host: str, status: str) -> None: ...


class _SilentEvents:
    def host_status(self, host: str, status: str) -> None:
        pass


@dataclass
class HostChange:
    """One host's pending change: its session, its objects as read, and the operations to apply."""

    host: Host
    connection: HostConnection | None
    desired: tuple[PlannedObject, ...]
    state: HostState | None = None
    operations: list[Operation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    # Every restore of earlier runs on the host, pending or finished, when the list could be read.
    restores: list[RestoreStatus] | None = None

    @property
    def leftover_restores(self) -> list[RestoreStatus]:
        """Restore tasks that earlier runs left armed: each would later undo this run's change."""
        return [restore for restore in self.restores or [] if restore.pending]

    @property
    def reachable(self) -> bool:
        return self.error is None


@dataclass
class HostResult:
    host: str
    status: str  # "unchanged", "changed", "failed", "unreachable"
    operations: int = 0
    applied: int = 0
    detail: str = ""


@dataclass
class ChangeSet:
    """Every host's pending change, with its open session; close() always."""

    changes: dict[str, HostChange]
    policy_store: str
    group: str

    @property
    def has_changes(self) -> bool:
        return any(c.operations for c in self.changes.values())

    @property
    def unreachable(self) -> list[HostChange]:
        return [c for c in self.changes.values() if not c.reachable]

    def close(self) -> None:
        for change in self.changes.values():
            if change.connection is not None:
                change.connection.close()
                change.connection = None


def overlap_warnings(state: HostState, desired: tuple[PlannedObject, ...]) -> list[str]:
    """Describe foreign rules that match the same traffic as a planned rule; they are never touched."""
    warnings = []
    planned = [obj for obj in desired if isinstance(obj, IPsecRule)]
    for foreign in state.foreign_rules:
        if not foreign.enabled:
            continue
        for rule in planned:
            if (
                addresses_overlap(foreign.local_address, rule.local_address)
                and addresses_overlap(foreign.remote_address, rule.remote_address)
                and protocols_overlap(foreign.protocol, rule.protocol)
                and ports_overlap(foreign.local_port, rule.local_port)
                and ports_overlap(foreign.remote_port, rule.remote_port)
            ):
                warnings.append(
                    f"unmanaged rule '{foreign.display_name or foreign.name}' (group '{foreign.group or '-'}', "
                    f"{foreign.inbound_security}/{foreign.outbound_security}) overlaps planned rule '{rule.name}'; "
                    "ipsec-deploy leaves it untouched, and Windows applies the more specific rule"
                )
                break
    return warnings


class Executor:
    def __init__(self, connector: Connector, policy_store: str, group: str, forks: int = 10, events: ExecutorEvents | None = None) -> None:
        self.connector = connector
        self.policy_store = policy_store
        self.group = group
        self.forks = max(1, forks)
        self.events = events or _SilentEvents()

    def parallel(self, items: list[Any], work: Callable[[Any], Any]) -> list[Any]:
        """Run work on each item, at most ``forks`` at a time, and return the results in order."""
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.forks, len(items))) as pool:
            return list(pool.map(work, items))

    def prepare(self, targets: list[tuple[Host, tuple[PlannedObject, ...]]]) -> ChangeSet:
        """Connect to every host, read its objects and compute its operations, in parallel."""

        def read(target: tuple[Host, tuple[PlannedObject, ...]]) -> HostChange:
            host, desired = target
            change = HostChange(host, None, desired)
            try:
                self.events.host_status(host.name, "connecting")
                change.connection = self.connector(host)
                self.events.host_status(host.name, "reading")
                records = change.connection.run_script(read_state_script(), {"Group": self.group, "PolicyStore": self.policy_store}, retry=True)
                change.state = parse_host_state(records)
                wrong_host = wrong_host_reason(host, change.state.computer_name)
                if wrong_host:
                    change.error = wrong_host
                    log.info("%s: not read: %s", host.name, wrong_host)
                    self.events.host_status(host.name, "wrong host")
                    return change
                wanted = {(obj.kind, obj.name): obj for obj in desired}
                change.state.managed = {key: with_secret_names(obj, wanted.get(key)) for key, obj in change.state.managed.items()}
                change.operations = diff_host(change.state.managed, desired, self.policy_store)
                change.warnings = overlap_warnings(change.state, desired)
                self._find_leftover_restores(change)
                self.events.host_status(host.name, f"{len(change.operations)} change(s)" if change.operations else "no changes")
            except (TransportError, RemoteCommandFailed, CredentialError, StateError) as error:
                change.error = str(error).removeprefix(f"{host.name}: ")
                log.info("%s: not read: %s", host.name, change.error)
                self.events.host_status(host.name, "unreachable")
            except Exception as error:  # noqa: BLE001 - one host's unexpected data must not stop the others
                change.error = f"unexpected error while reading the host: {type(error).__name__}: {error}"
                log.exception("%s: reading the host failed", host.name)
                self.events.host_status(host.name, "unreachable")
            return change

        changes = self.parallel(targets, read)
        return ChangeSet({c.host.name: c for c in changes}, self.policy_store, self.group)

    def _find_leftover_restores(self, change: HostChange) -> None:
        # Listed while the host's session is open anyway, in the parallel read.
        try:
            change.restores = list_restores(change.connection)
        except (TransportError, RemoteCommandFailed) as error:
            change.warnings.append(f"cannot check for restore tasks that earlier runs left armed: {str(error).removeprefix(change.host.name + ': ')}")

    def connect_all(self, hosts: list[Host]) -> tuple[dict[str, HostConnection], dict[str, str]]:
        """Open a session to every host in parallel; return the sessions and the errors by host."""

        def connect(host: Host) -> tuple[str, HostConnection | None, str | None]:
            try:
                self.events.host_status(host.name, "connecting")
                return host.name, self.connector(host), None
            except (TransportError, CredentialError) as error:
                return host.name, None, str(error).removeprefix(f"{host.name}: ")

        sessions: dict[str, HostConnection] = {}
        errors: dict[str, str] = {}
        for name, session, error in self.parallel(hosts, connect):
            if session is not None:
                sessions[name] = session
            else:
                errors[name] = error or "not connected"
        return sessions, errors

    def apply(self, change_set: ChangeSet, journal: RunJournal) -> list[HostResult]:
        """Apply every reachable host's operations; one host's failure never stops the others."""
        for change in change_set.changes.values():
            if change.reachable and change.state is not None and change.operations:
                journal.write_snapshot(change.host.name, change.state.objects())

        def apply_host(change: HostChange) -> HostResult:
            result = self._apply_host(change, journal)
            journal.record_host(result.host, result.status, result.detail, result.operations)
            return result

        return self.parallel(list(change_set.changes.values()), apply_host)

    def apply_operations(self, change: HostChange, operations: list[Operation], journal: RunJournal, stage: str = "") -> HostResult:
        """Apply one host's operations in one pipeline; the host undoes them all if one fails."""
        return self._apply_host(change, journal, operations, stage)

    def _apply_host(self, change: HostChange, journal: RunJournal, operations: list[Operation] | None = None, stage: str = "") -> HostResult:
        name = change.host.name
        operations = change.operations if operations is None else operations
        if not change.reachable:
            return HostResult(name, "unreachable", detail=change.error or "")
        if not operations:
            return HostResult(name, "unchanged")
        assert change.connection is not None

        self.events.host_status(name, f"applying{' (' + stage + ')' if stage else ''}")
        try:
            payload = operations_payload(operations)
        except PayloadError as error:
            return HostResult(name, "failed", len(operations), 0, f"{error}; nothing was changed")

        try:
            results = change.connection.run_script(apply_changes_script(), {"Operations": payload})
        except (TransportError, RemoteCommandFailed) as error:
            # The script may have run partly before the session broke, so the
            # host's state is unknown; the snapshot in the journal allows a revert.
            reason = str(error).removeprefix(name + ": ").rstrip(".")
            detail = f"{reason}. The host may be partly changed; 'ipsec-deploy revert' with --run {journal.run_id} restores it"
            self.events.host_status(name, "failed")
            return HostResult(name, "failed", len(operations), 0, detail)

        return self._record_results(change, operations, results, journal, stage)

    def _record_results(self, change: HostChange, operations: list[Operation], results: list[Any], journal: RunJournal, stage: str) -> HostResult:
        name = change.host.name
        applied = 0
        for record in results:
            if not isinstance(record, dict):
                continue
            index = int(record.get("Index", -1))
            if not 0 <= index < len(operations):
                continue
            operation = operations[index]
            if record.get("Status") == "Applied":
                applied += 1
                journal.record_operation(name, index, operation, "applied", stage=stage)
                continue

            message = str(record.get("Message", "")).strip()
            undo_errors = [str(e) for e in record.get("UndoErrors") or []]
            journal.record_operation(name, index, operation, "failed", message, stage=stage)
            detail = f"{operation.call.name} '{operation.name}' failed: {message}"
            if undo_errors:
                detail += f"; undoing the {applied} applied operation(s) also failed: {'; '.join(undo_errors)}"
            else:
                detail += f"; the {applied} operation(s) applied before it were undone"
            self.events.host_status(name, "failed, rolled back")
            return HostResult(name, "failed", len(operations), 0, detail)

        if applied != len(operations):
            detail = f"the host confirmed {applied} of {len(operations)} operations"
            self.events.host_status(name, "failed")
            return HostResult(name, "failed", len(operations), applied, detail)
        self.events.host_status(name, "changed")
        return HostResult(name, "changed", len(operations), applied)


def overall_result(results: list[HostResult]) -> str:
    if any(r.status in ("failed", "unreachable") for r in results):
        return "failed"
    if any(r.status == "changed" for r in results):
        return "changed"
    return "unchanged"

