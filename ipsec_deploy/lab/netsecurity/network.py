"""The lab network: the simulated hosts by name and data-plane address, and their saved state.

Traffic between lab hosts is modelled, never sent: a data-plane address such
as 10.0.1.10 only selects a ``LabHost`` in this registry.

With a state directory, every host's state and the lab-wide state (clock,
domain GPOs) are JSON files there, so separate processes that build a
``LabNetwork`` on the same directory see the same hosts, as they would see the
same real servers::

    <state_dir>/lab.json            clock and domain GPO stores
    <state_dir>/hosts/<NAME>.json   one host's stores, SAs, events and counters
    <state_dir>/lab.lock            serialises commands across processes
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ipsec_deploy.lab.netsecurity.clock import LabClock
from ipsec_deploy.lab.netsecurity.facts import HostFacts
from ipsec_deploy.lab.netsecurity.host import HostState, LabHost
from ipsec_deploy.lab.netsecurity.store import PolicyStore
from ipsec_deploy.lab.netsecurity.tasks import run_due_tasks as run_host_due_tasks


def _write_json_atomically(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(temp_name, path)


def _file_signature(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return (status.st_mtime_ns, status.st_size)


class LabNetwork:
    """An in-process registry of simulated hosts, optionally saved in ``state_dir``."""

    def __init__(self, state_dir: str | Path | None = None, clock: LabClock | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.clock = clock or LabClock()
        self.clock.on_change = self._clock_changed
        self.hosts: dict[str, LabHost] = {}
        self.gpo_stores: dict[str, PolicyStore] = {}

        self._lock = threading.RLock()
        self._depth = 0
        self._lock_file: Any = None
        self._signatures: dict[Path, tuple[int, int] | None] = {}

        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            with self.transaction():
                pass

    # Hosts

    def add_host(self, facts: HostFacts) -> LabHost:
        """Register a host; load its saved state, or create it and its foreign rules on first start."""
        with self.transaction():
            path = self._host_path(facts.computer_name)
            saved = path is not None and path.exists()
            host = LabHost(facts, self)
            self.hosts[facts.computer_name.lower()] = host
            if saved:
                self._load_host(host)
                return host

            host.count_writes = False
            try:
                for parameters in facts.foreign_rules:
                    host.invoke_checked("New-NetIPsecRule", parameters)
                for command, parameters in facts.foreign_commands:
                    host.invoke_checked(command, parameters)
            finally:
                host.count_writes = True
            return host

    def host(self, name: str) -> LabHost | None:
        """Find a host by computer name, FQDN or data-plane address."""
        lowered = name.lower()
        if lowered in self.hosts:
            return self.hosts[lowered]
        for host in self.hosts.values():
            if lowered == host.facts.fqdn or lowered in (a.lower() for a in host.facts.addresses):
                return host
        return None

    def host_by_address(self, address: str) -> LabHost | None:
        for host in self.hosts.values():
            if address.lower() in (a.lower() for a in host.facts.addresses):
                return host
        return None

    # Domain GPO stores

    def gpo_store(self, name: str, create: bool = False) -> PolicyStore:
        key = name.lower()
        store = self.gpo_stores.get(key)
        if store is None:
            if not create:
                raise KeyError(name)
            store = PolicyStore(name, "GroupPolicy")
            self.gpo_stores[key] = store
        return store

    # Persistence

    def _lab_path(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / "lab.json"

    def _host_path(self, computer_name: str) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir / "hosts" / f"{computer_name.upper()}.json"

    def _clock_changed(self) -> None:
        # Inside a transaction the clock is saved when it ends, and due tasks
        # run at the start of the next pipeline. Outside one, save now,
        # keeping the new time over the one on disk, and run the due tasks.
        if self._depth > 0:
            return
        now = self.clock.to_json()
        with self.transaction():
            self.clock.load_json(now)
            self.run_due_tasks()

    # Scheduled tasks

    def run_due_tasks(self) -> dict[str, list[str]]:
        """Run every host's scheduled tasks whose deadline the lab clock has passed; return task names by host."""
        ran: dict[str, list[str]] = {}
        with self.transaction():
            for host in self.hosts.values():
                names = run_host_due_tasks(host)
                if names:
                    ran[host.name] = names
        return ran

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lab lock, reload state other processes saved, and save all state at the end."""
        with self._lock:
            outermost = self._depth == 0
            if outermost:
                self._acquire_file_lock()
                self._refresh()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if outermost:
                    try:
                        self._save()
                    finally:
                        self._release_file_lock()

    def _acquire_file_lock(self) -> None:
        if self.state_dir is None:
            return
        self._lock_file = open(self.state_dir / "lab.lock", "a+")
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)

    def _release_file_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _refresh(self) -> None:
        if self.state_dir is None:
            return
        lab_path = self._lab_path()
        signature = _file_signature(lab_path)
        if signature is not None and signature != self._signatures.get(lab_path):
            data = json.loads(lab_path.read_text("utf-8"))
            self.clock.load_json(data["clock"])
            self.gpo_stores = {
                key: PolicyStore.from_json(value) for key, value in data["gpo_stores"].items()
            }
            self._signatures[lab_path] = signature
        for host in self.hosts.values():
            path = self._host_path(host.name)
            if path is not None and _file_signature(path) != self._signatures.get(path):
                self._load_host(host)

    def _load_host(self, host: LabHost) -> None:
        path = self._host_path(host.name)
        if path is None or not path.exists():
            return
        data = json.loads(path.read_text("utf-8"))
        host.state = HostState.from_json(data["state"])
        self._signatures[path] = _file_signature(path)

    def _save(self) -> None:
        if self.state_dir is None:
            return
        # Every command changes at least a call counter, so everything is saved.
        for host in self.hosts.values():
            path = self._host_path(host.name)
            assert path is not None
            _write_json_atomically(path, {"computer_name": host.name, "state": host.state.to_json()})
            self._signatures[path] = _file_signature(path)
        lab_path = self._lab_path()
        _write_json_atomically(lab_path, {
            "clock": self.clock.to_json(),
            "gpo_stores": {key: store.to_json() for key, store in self.gpo_stores.items()},
        })
        self._signatures[lab_path] = _file_signature(lab_path)
