"""One simulated Windows Server 2019 host: its policy stores, SAs, event log and counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ipsec_deploy.lab.netsecurity import errors
from ipsec_deploy.lab.netsecurity.faults import CmdletFault, normalize_faults
from ipsec_deploy.lab.netsecurity.facts import HostFacts
from ipsec_deploy.lab.netsecurity.store import (
    ACTIVE_STORE,
    EMPTY_READ_ONLY_STORES,
    LOCAL_GPO_STORE,
    PERSISTENT_STORE,
    RSOP_STORE,
    PolicyStore,
)
from ipsec_deploy.lab.pipeline import PipelineResult

if TYPE_CHECKING:
    from ipsec_deploy.lab.netsecurity.network import LabNetwork


@dataclass
class HostState:
    """Everything about a host that changes and is saved between commands."""

    persistent_store: PolicyStore = field(default_factory=lambda: PolicyStore(PERSISTENT_STORE, "Local"))
    local_gpo_store: PolicyStore = field(default_factory=lambda: PolicyStore(LOCAL_GPO_STORE, "GroupPolicy"))
    main_mode_sas: list[dict[str, Any]] = field(default_factory=list)
    quick_mode_sas: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    write_count: int = 0
    write_log: list[dict[str, Any]] = field(default_factory=list)
    call_counts: dict[str, int] = field(default_factory=dict)
    next_record_id: int = 1000
    next_sa_id: int = 1
    gpo_sessions: dict[str, str] = field(default_factory=dict)  # session id -> GPO store name
    # Scheduled tasks by lower-case task name, and files by lower-case full
    # path; see tasks.py. State saved before they existed loads as empty.
    scheduled_tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "persistent_store": self.persistent_store.to_json(),
            "local_gpo_store": self.local_gpo_store.to_json(),
            "main_mode_sas": self.main_mode_sas,
            "quick_mode_sas": self.quick_mode_sas,
            "events": self.events,
            "write_count": self.write_count,
            "write_log": self.write_log,
            "call_counts": self.call_counts,
            "next_record_id": self.next_record_id,
            "next_sa_id": self.next_sa_id,
            "gpo_sessions": self.gpo_sessions,
            "scheduled_tasks": self.scheduled_tasks,
            "files": self.files,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostState:
        return cls(
            persistent_store=PolicyStore.from_json(data["persistent_store"]),
            local_gpo_store=PolicyStore.from_json(data["local_gpo_store"]),
            main_mode_sas=data["main_mode_sas"],
            quick_mode_sas=data["quick_mode_sas"],
            events=data["events"],
            write_count=data["write_count"],
            write_log=data["write_log"],
            call_counts=data["call_counts"],
            next_record_id=data["next_record_id"],
            next_sa_id=data["next_sa_id"],
            gpo_sessions=data["gpo_sessions"],
            scheduled_tasks=data.get("scheduled_tasks", {}),
            files=data.get("files", {}),
        )


class LabHost:
    """A simulated host (a test double, not Windows) and the Python API its script counterparts use."""

    def __init__(self, facts: HostFacts, network: LabNetwork, state: HostState | None = None) -> None:
        self.facts = facts
        self.network = network
        self.state = state or HostState()
        self.faults: list[CmdletFault] = normalize_faults(facts.fail_cmdlets)
        # While seeding foreign rules, writes are not counted as ipsec-deploy's.
        self.count_writes = True

    @property
    def name(self) -> str:
        return self.facts.computer_name

    # Counters and logs

    @property
    def write_count(self) -> int:
        """Write operations (New/Set/Remove/Enable/Disable/Rename/Copy cmdlet calls) this host received."""
        return self.state.write_count

    @property
    def write_log(self) -> list[dict[str, Any]]:
        return self.state.write_log

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.state.events

    def record_write(self, cmdlet: str, object_names: list[str]) -> None:
        if not self.count_writes:
            return
        self.state.write_count += 1
        self.state.write_log.append({
            "number": self.state.write_count,
            "cmdlet": cmdlet,
            "objects": object_names,
            "time": self.network.clock.now().isoformat(),
        })

    def next_call_number(self, cmdlet: str) -> int:
        key = cmdlet.lower()
        self.state.call_counts[key] = self.state.call_counts.get(key, 0) + 1
        return self.state.call_counts[key]

    def next_sa_id(self) -> int:
        self.state.next_sa_id += 1
        return self.state.next_sa_id - 1

    # Policy stores

    def applied_gpo_stores(self) -> list[PolicyStore]:
        stores = [self.state.local_gpo_store]
        for name in self.facts.applied_gpos:
            stores.append(self.network.gpo_store(name, create=True))
        return stores

    def active_stores(self) -> list[PolicyStore]:
        """Return the stores whose objects are in effect (the ActiveStore view), GPOs first."""
        # NOTE: GPO changes take effect at once; there is no Group Policy
        # refresh interval in the lab.
        return [*self.applied_gpo_stores(), self.state.persistent_store]

    def resolve_store_name(self, command: str, policy_store: str | None, gpo_session: str | None) -> str:
        if gpo_session is not None:
            store_name = self.state.gpo_sessions.get(gpo_session)
            if store_name is None:
                raise errors.windows_system_error(
                    command, 87, f"The parameter is incorrect. No open GPO session '{gpo_session}'; "
                    "call Open-NetGPO first.", "InvalidArgument", gpo_session,
                )
            return store_name
        return policy_store or PERSISTENT_STORE

    def stores_for_read(self, command: str, store_name: str) -> list[PolicyStore]:
        lowered = store_name.lower()
        if lowered == PERSISTENT_STORE.lower():
            return [self.state.persistent_store]
        if lowered == ACTIVE_STORE.lower():
            return self.active_stores()
        if lowered == RSOP_STORE.lower():
            return self.applied_gpo_stores()
        if lowered in (s.lower() for s in EMPTY_READ_ONLY_STORES):
            return []
        return [self.store_for_write(command, store_name)]

    def store_for_write(self, command: str, store_name: str) -> PolicyStore:
        lowered = store_name.lower()
        if lowered == PERSISTENT_STORE.lower():
            return self.state.persistent_store
        if lowered in (LOCAL_GPO_STORE, self.facts.computer_name.lower(), self.facts.fqdn):
            return self.state.local_gpo_store
        if "\\" in store_name:
            # NOTE: any "domain\name" is accepted and the GPO created on first
            # use; Windows fails for a GPO that does not exist in the domain.
            return self.network.gpo_store(store_name, create=True)
        if lowered in (ACTIVE_STORE.lower(), RSOP_STORE.lower(), *(s.lower() for s in EMPTY_READ_ONLY_STORES)):
            # NOTE: the wording of Windows' error for writes to a read-only
            # store was not confirmed; ERROR_NOT_SUPPORTED (50) is assumed.
            raise errors.windows_system_error(
                command, 50, f"The request is not supported. The policy store '{store_name}' is read-only.",
                "InvalidOperation", store_name,
            )
        raise errors.windows_system_error(
            command, 87, f"The parameter is incorrect. Unknown policy store '{store_name}'.",
            "InvalidArgument", store_name,
        )

    # Events

    def add_event(self, event_id: int, message: str, success: bool, data: dict[str, Any] | None = None) -> None:
        self.state.next_record_id += 1
        self.state.events.append({
            "RecordId": self.state.next_record_id,
            "Id": event_id,
            "TimeCreated": self.network.clock.now().isoformat(),
            "Message": message,
            "Keywords": "Audit Success" if success else "Audit Failure",
            "Data": data or {},
        })

    # Cmdlet API for script counterparts

    def invoke(self, command: str, parameters: dict[str, Any] | list[tuple[str | None, Any]] | None = None,
               input: list[Any] | None = None) -> PipelineResult:
        """Run one cmdlet with the same binding, errors and counters as a remote pipeline."""
        from ipsec_deploy.lab.netsecurity.executor import run_single_command

        if isinstance(parameters, dict):
            arguments = list(parameters.items())
        else:
            arguments = list(parameters or [])
        with self.network.transaction():
            return run_single_command(self, command, arguments, input)

    def invoke_checked(self, command: str, parameters: dict[str, Any] | list[tuple[str | None, Any]] | None = None,
                       input: list[Any] | None = None) -> list[Any]:
        """Run one cmdlet as with -ErrorAction Stop: return its output or raise CmdletError."""
        result = self.invoke(command, parameters, input)
        if result.failure is not None:
            raise errors.CmdletError(result.failure, terminating=True)
        if result.errors:
            raise errors.CmdletError(result.errors[0], terminating=True)
        return result.output
