"""The journal counts a host as changed from its first applied operation, even if the run ends before its result."""

from __future__ import annotations

from ipsec_deploy.cmdlets import CmdletCall
from ipsec_deploy.executor.diff import Operation
from ipsec_deploy.executor.journal import RunJournal, list_runs


def raise_operation() -> Operation:
    call = CmdletCall("Set-NetIPsecRule", (("IPsecRuleName", "ipsec-deploy-rule-app-db-endpoint2"), ("InboundSecurity", "Require")))
    return Operation("change", "ipsec_rule", "ipsec-deploy-rule-app-db-endpoint2", call, ())


def test_applied_operation_marks_host_changed(tmp_path):
    journal = RunJournal.create(tmp_path, "apply", "inventory.yaml", "PersistentStore", "ipsec-deploy")
    journal.record_host("APP-SRV01", "changed", changes=3)

    # DB-SRV01's raise went through, then Ctrl-C ended the run before its result.
    journal.record_operation("DB-SRV01", 0, raise_operation(), "applied", stage="raise")
    journal.finish("interrupted")

    [run] = list_runs(tmp_path)
    assert run.hosts["DB-SRV01"]["status"] == "changed"
    assert run.hosts["APP-SRV01"] == {"status": "changed", "detail": "", "changes": 3}


def test_failed_operation_marks_host_failed(tmp_path):
    # The writes before the failure were applied, then undone by the script.
    journal = RunJournal.create(tmp_path, "apply", "inventory.yaml", "PersistentStore", "ipsec-deploy")

    journal.record_operation("DB-SRV01", 0, raise_operation(), "applied", stage="raise")
    journal.record_operation("DB-SRV01", 1, raise_operation(), "failed", "The RPC server is unavailable.", stage="raise")

    [run] = list_runs(tmp_path)
    assert run.hosts["DB-SRV01"] == {"status": "failed", "detail": "The RPC server is unavailable.", "changes": 0}
