"""The run journal: what each run planned, what each host held before, and every operation's result.

Layout under the journal directory (default ``.ipsec-deploy``)::

    runs/<run-id>/run.json            run metadata, per-host result, snapshot checksums
    runs/<run-id>/plan.json           the plan (apply only)
    runs/<run-id>/snapshots/<host>.json  managed objects before the run
    runs/<run-id>/operations.jsonl    one line per operation and its result

Files are created with mode 0600 and directories with 0700. Secrets never
enter the journal: a pre-shared key appears only as the name of its
environment variable.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..objects import PlannedObject
from ..render.json_plan import call_to_json
from .diff import Operation
from .records import RecordError, object_from_record, object_to_record

DEFAULT_JOURNAL_DIR = ".ipsec-deploy"


class JournalError(Exception):
    """A journal that is missing, unreadable or altered."""


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, replacing it whole, so a crash never leaves half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, 0o600)  # an existing file keeps its old mode on O_CREAT
    os.replace(temporary, path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_run_id(now: datetime | None = None) -> str:
    # Milliseconds keep ids in start order when runs start within a second.
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(3)


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    kind: str
    started: str
    hosts: dict[str, Any]
    result: str
    reverts: str | None
    restores: dict[str, Any] = field(default_factory=dict)
    held_in_request: list[str] = field(default_factory=list)  # "HOST: rule (reason)"

    @property
    def pending_hosts(self) -> list[str]:
        """Hosts whose restore task this run armed and never confirmed."""
        return sorted(host for host, restore in self.restores.items() if restore.get("state") == "armed")


class RunJournal:
    """One run's directory; thread-safe, since hosts are applied in parallel."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.directory = root / "runs" / run_id
        self._lock = threading.Lock()
        self._applied: dict[str, int] = {}  # host -> writes recorded as applied in this run
        self._metadata: dict[str, Any] = {}

    @classmethod
    def create(cls, root: Path, kind: str, inventory: str, policy_store: str, group: str, reverts: str | None = None) -> "RunJournal":
        journal = cls(root, new_run_id())
        for directory in (root, root / "runs", journal.directory, journal.directory / "snapshots"):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        journal._metadata = {
            "run_id": journal.run_id,
            "kind": kind,
            "started": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "finished": None,
            # Absolute, so that a revert from another directory can tell whether it has the same file.
            "inventory": str(Path(inventory).resolve()),
            "policy_store": policy_store,
            "managed_group": group,
            "reverts": reverts,
            "hosts": {},
            "snapshots": {},
            "result": "running",
        }
        journal._save_metadata()
        return journal

    def _save_metadata(self) -> None:
        _write_private(self.directory / "run.json", json.dumps(self._metadata, indent=2) + "\n")

    def write_plan(self, plan_document: dict[str, Any]) -> None:
        _write_private(self.directory / "plan.json", json.dumps(plan_document, indent=2) + "\n")

    def write_snapshot(self, host: str, objects: list[PlannedObject]) -> None:
        """Record a host's managed objects before anything on it changes."""
        path = self.directory / "snapshots" / f"{host}.json"
        document = {"host": host, "objects": [object_to_record(o) for o in objects]}
        _write_private(path, json.dumps(document, indent=2) + "\n")
        with self._lock:
            self._metadata["snapshots"][host] = _sha256(path)
            self._save_metadata()

    def record_operation(self, host: str, index: int, operation: Operation, status: str, message: str = "", stage: str = "") -> None:
        line = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": host,
            "stage": stage,
            "index": index,
            "action": operation.action,
            "kind": operation.kind,
            "name": operation.name,
            "call": call_to_json(operation.call),
            "status": status,
            "message": message,
        }
        with self._lock:
            descriptor = os.open(self.directory / "operations.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
            if status == "applied":
                self._applied[host] = self._applied.get(host, 0) + 1

            # A Ctrl-C can end the run before this host's result is recorded.
            # The host is changed all the same, so 'runs' must list it as changed.
            hosts = self._metadata["hosts"]
            if status == "applied" and hosts.get(host, {}).get("status") in (None, "unchanged"):
                hosts[host] = {"status": "changed", "detail": "", "changes": 0}
                self._save_metadata()
            elif status == "failed":
                # The script undoes the stage's applied writes after a failure.
                hosts[host] = {"status": "failed", "detail": message, "changes": 0}
                self._save_metadata()

    def record_host(self, host: str, status: str, detail: str = "", changes: int = 0) -> None:
        with self._lock:
            self._metadata["hosts"][host] = {"status": status, "detail": detail, "changes": changes}
            self._save_metadata()

    def applied_writes(self, host: str) -> int:
        """Return how many writes this run recorded as applied on the host, whatever happened to them later."""
        with self._lock:
            return self._applied.get(host, 0)

    def record_held_in_request(self, rules: list[str]) -> None:
        """Record the rules the staged rollout left in Request, each as "HOST: rule (reason)"."""
        with self._lock:
            self._metadata["held_in_request"] = list(rules)
            self._save_metadata()

    def record_restore(self, host: str, task: str, deadline: str, state: str) -> None:
        """Record the state of a host's restore task: armed, confirmed or restored."""
        with self._lock:
            self._metadata.setdefault("restores", {})[host] = {"task": task, "deadline": deadline, "state": state}
            self._save_metadata()

    def finish(self, result: str) -> None:
        with self._lock:
            self._metadata["result"] = result
            self._metadata["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._save_metadata()


def _read_metadata(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / "run.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JournalError(f"run {directory.name}: run.json is missing from {directory}") from None
    except (OSError, json.JSONDecodeError) as error:
        raise JournalError(f"run {directory.name}: cannot read run.json: {error}") from None


def mark_restore(root: Path, run_id: str, host: str, state: str) -> None:
    """Record in an earlier run's journal that its restore task on a host changed state; skip a run that is not there."""
    path = root / "runs" / run_id / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    restore = data.setdefault("restores", {}).setdefault(host, {})
    restore["state"] = state
    _write_private(path, json.dumps(data, indent=2) + "\n")


def list_runs(root: Path) -> list[RunSummary]:
    runs_dir = root / "runs"
    if not runs_dir.is_dir():
        return []
    summaries = []
    # Run ids start with the start time, so sorting them sorts the runs.
    for directory in sorted(runs_dir.iterdir()):
        if not directory.is_dir():
            continue
        try:
            data = _read_metadata(directory)
        except JournalError:
            summaries.append(RunSummary(directory.name, "?", "?", {}, "unreadable", None))
            continue
        summaries.append(RunSummary(data.get("run_id", directory.name), data.get("kind", "?"), data.get("started", "?"), data.get("hosts", {}), data.get("result", "?"), data.get("reverts"), data.get("restores", {}), data.get("held_in_request", [])))
    return summaries


def load_snapshots(root: Path, run_id: str | None) -> tuple[str, dict[str, Any], dict[str, list[PlannedObject]]]:
    """Return (run id, metadata, host -> objects) of a run, checking every snapshot against its checksum.

    Without a run id, the latest apply run is used.
    """
    if run_id is None:
        applies = [r for r in list_runs(root) if r.kind == "apply"]
        if not applies:
            raise JournalError(f"no apply run found in {root / 'runs'}; nothing to revert")
        run_id = applies[-1].run_id

    directory = root / "runs" / run_id
    if not directory.is_dir():
        raise JournalError(f"run {run_id} not found in {root / 'runs'}; 'ipsec-deploy runs' lists the runs")
    metadata = _read_metadata(directory)

    snapshots: dict[str, list[PlannedObject]] = {}
    for host, expected in metadata.get("snapshots", {}).items():
        path = directory / "snapshots" / f"{host}.json"
        if not path.is_file():
            raise JournalError(f"run {run_id}: the snapshot of {host} is missing ({path}); refusing to revert from an incomplete journal")
        if _sha256(path) != expected:
            raise JournalError(f"run {run_id}: the snapshot of {host} was altered since the run ({path}); refusing to revert")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            snapshots[host] = [object_from_record(record) for record in document["objects"]]
        except (json.JSONDecodeError, KeyError, RecordError) as error:
            raise JournalError(f"run {run_id}: cannot read the snapshot of {host}: {error}") from None
    return run_id, metadata, snapshots
