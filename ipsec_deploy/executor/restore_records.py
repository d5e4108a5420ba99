"""Bring the journal's record of restore tasks up to date with what the hosts report.

A run records each host's restore as armed, then confirmed. A restore task
that fired, or one that an interrupted run removed without recording it,
would stay "armed" in the journal, and 'runs' would show its confirmation
as pending forever. Every apply and revert lists the restores on the hosts
it reads, and this module corrects the journal from that list.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from .confirm import RUNNING_STATE, RestoreStatus
from .journal import list_runs, mark_restore

log = logging.getLogger("ipsec_deploy.executor")


def record_finished_restores(restores_by_host: Mapping[str, list[RestoreStatus] | None], journal_dir: Path,
                             now: datetime | None = None) -> list[str]:
    """Mark restores that the journal calls armed but that are no longer pending on their host; return warnings.

    ``restores_by_host`` maps each host read to its restores, or to None
    when the list could not be read. A restore's own result on the host
    proves what happened. A missing task proves nothing before the run's
    deadline, because the same host name may now reach another machine
    (another lab, say), or another operator's run may be arming it now.
    """
    now = now or datetime.now(timezone.utc)
    warnings = []
    for summary in list_runs(journal_dir):
        for host in summary.pending_hosts:
            restores = restores_by_host.get(host)
            if restores is None:
                continue
            found = next((restore for restore in restores if restore.run_id == summary.run_id), None)
            if found is not None and (found.pending or found.state == RUNNING_STATE):
                continue
            if found is None and not _deadline_passed(summary.restores[host], now):
                continue

            # Restored, Failed or Orphaned come from the host; no trace after the deadline means it was removed.
            state = found.state.lower() if found is not None else "gone"
            try:
                mark_restore(journal_dir, summary.run_id, host, state)
            except OSError as error:
                warnings.append(f"cannot update the journal of run {summary.run_id}: {error}")
                continue
            log.info("%s: the restore of run %s is %s", host, summary.run_id, state)
    return warnings


def _deadline_passed(restore: dict, now: datetime) -> bool:
    try:
        return datetime.fromisoformat(restore["deadline"]) < now
    except (KeyError, TypeError, ValueError):
        return False
