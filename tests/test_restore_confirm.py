"""Commit-confirmed restore end to end: the restore scripts over pypsrp against a lab host, and the lab's task emulation.

The lab is a simulator: its scheduled task runs a Python counterpart of the
restore script when the lab clock passes the deadline. These tests show
that the library, the scripts' parameters and the counterparts agree; they
do not show that the scripts run on Windows.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from tree_sitter_language_pack import get_parser

from ipsec_deploy.executor import confirm
from ipsec_deploy.executor.diff import RULE_KINDS, diff_host
from ipsec_deploy.executor.journal import new_run_id
from ipsec_deploy.executor.payload import operations_payload
from ipsec_deploy.executor.state import HostState, parse_host_state
from ipsec_deploy.inventory import load_inventory
from ipsec_deploy.lab import shipped_restore_scripts
from ipsec_deploy.planner import build_plan
from ipsec_deploy.scripts import apply_changes_script, arm_restore_script, disarm_restore_script, read_state_script
from ipsec_deploy.transport.base import RemoteCommandFailed
from ipsec_deploy.transport.credentials import FixedCredentials
from ipsec_deploy.transport.psrp import PsrpConnection, psrp_connector
from tests.e2e_helpers import EXAMPLE_LAB, query_host
from tests.test_render_powershell import syntax_problems

HOST = "DB-SRV01"
GROUP = "ipsec-deploy"
STORE = "PersistentStore"
SCRIPTS = Path(__file__).resolve().parent.parent / "ipsec_deploy" / "scripts"
INVALID_RUN_IDS = [
    "",
    "latest",
    "20240115T090000.000Z-0A1B2C",  # upper-case hex
    "20240115t090000.000z-0a1b2c",  # lower-case separators
    "20240115T090000.000Z-0a1b2c\n",  # .NET's $ would accept a final newline
    "20240115T090000.000Z-0a1b2c'; Remove-Item C:\\ -Recurse; '",
    "..\\..\\Windows\\System32",
    "20240115T090000.000Z-0a1b2",
    "２0240115T090000.000Z-0a1b2c",  # a full-width digit, which \d would match
]


@pytest.fixture
def lab(lab_factory):
    running, inventory = lab_factory(EXAMPLE_LAB)
    return running, inventory


def connect(running, inventory: Path) -> PsrpConnection:
    host = load_inventory(inventory).hosts[HOST]
    return psrp_connector(FixedCredentials(running.password))(host)


def read_state(connection: PsrpConnection) -> HostState:
    return parse_host_state(connection.run_script(read_state_script(), {"Group": GROUP, "PolicyStore": STORE}))


def apply_desired(connection: PsrpConnection, desired) -> None:
    """Make the host's managed objects equal ``desired`` with apply_changes.ps1, as a run does."""
    operations = diff_host(read_state(connection).managed, tuple(desired), STORE)
    assert operations
    results = connection.run_script(apply_changes_script(), {"Operations": operations_payload(operations, {})})
    assert [r["Status"] for r in results] == ["Applied"] * len(operations)


def planned_objects(inventory: Path):
    return build_plan(load_inventory(inventory)).host(HOST).objects


def scheduled_tasks(running, inventory: Path) -> list:
    return query_host(inventory, HOST, running.password, "Get-ScheduledTask", {"TaskName": "ipsec-deploy-restore-*"})


def test_host_restores_itself_after_controller_is_lost(lab):
    running, inventory = lab
    clock = running.network.clock
    connection = connect(running, inventory)
    apply_desired(connection, planned_objects(inventory))
    before = read_state(connection)
    assert before.managed

    run_id = new_run_id()
    deadline = clock.now() + timedelta(minutes=10)
    armed = confirm.arm_restore(connection, run_id, GROUP, STORE, before.objects(), deadline)
    assert armed.task_name == f"ipsec-deploy-restore-{run_id}"
    assert armed.deadline == deadline.replace(microsecond=0)
    assert armed.host_time == clock.now().replace(microsecond=0)

    # The run removes every rule, then the controller is lost: no disarm.
    apply_desired(connection, [obj for obj in planned_objects(inventory) if obj.kind not in RULE_KINDS])
    assert read_state(connection).managed != before.managed
    connection.close()

    clock.advance(timedelta(minutes=9, seconds=59))
    assert len(scheduled_tasks(running, inventory)) == 1

    clock.advance(timedelta(seconds=2))
    assert scheduled_tasks(running, inventory) == []
    after_connection = connect(running, inventory)
    try:
        after = read_state(after_connection)
        statuses = confirm.list_restores(after_connection)
    finally:
        after_connection.close()
    assert after.managed == before.managed
    assert after.foreign_rules == before.foreign_rules
    assert [(s.run_id, s.state, s.errors) for s in statuses] == [(run_id, "Restored", ())]
    assert statuses[0].deadline == deadline.replace(microsecond=0)


def test_restore_runs_at_start_of_next_pipeline(lab):
    running, inventory = lab
    network = running.network
    connection = connect(running, inventory)
    try:
        apply_desired(connection, planned_objects(inventory))
        before = read_state(connection)
        run_id = new_run_id()
        confirm.arm_restore(connection, run_id, GROUP, STORE, [], network.clock.now() + timedelta(minutes=5))

        # Moving the clock inside a transaction defers due tasks to the next pipeline.
        with network.transaction():
            network.clock.advance(timedelta(minutes=6))
        assert running.hosts[HOST].state.scheduled_tasks

        assert before.managed
        assert read_state(connection).managed == {}
        assert network.run_due_tasks() == {}
    finally:
        connection.close()


def test_disarm_before_deadline_prevents_restore(lab):
    running, inventory = lab
    clock = running.network.clock
    connection = connect(running, inventory)
    try:
        run_id = new_run_id()
        confirm.arm_restore(connection, run_id, GROUP, STORE, [], clock.now() + timedelta(minutes=10))
        apply_desired(connection, planned_objects(inventory))
        changed = read_state(connection)

        result = confirm.disarm_restore(connection, run_id)
        assert result.previous_state == "Ready"
        assert not result.restore_ran
        assert scheduled_tasks(running, inventory) == []

        clock.advance(timedelta(hours=1))
        assert read_state(connection).managed == changed.managed
        assert confirm.list_restores(connection) == []
        assert confirm.disarm_restore(connection, run_id).previous_state == "Absent"
    finally:
        connection.close()


def test_disarm_after_deadline_reports_restore(lab):
    running, inventory = lab
    clock = running.network.clock
    connection = connect(running, inventory)
    try:
        run_id = new_run_id()
        confirm.arm_restore(connection, run_id, GROUP, STORE, [], clock.now() + timedelta(minutes=10))
        apply_desired(connection, planned_objects(inventory))
        clock.advance(timedelta(minutes=11))

        result = confirm.disarm_restore(connection, run_id)
        assert result.previous_state == "Restored"
        assert result.restore_ran
        assert read_state(connection).managed == {}
        assert confirm.list_restores(connection) == []
    finally:
        connection.close()


def test_arm_twice_keeps_one_task(lab):
    running, inventory = lab
    clock = running.network.clock
    connection = connect(running, inventory)
    try:
        run_id = new_run_id()
        first = clock.now() + timedelta(minutes=10)
        second = clock.now() + timedelta(minutes=20)
        confirm.arm_restore(connection, run_id, GROUP, STORE, planned_objects(inventory), first)
        confirm.arm_restore(connection, run_id, GROUP, STORE, planned_objects(inventory), second)

        pending = confirm.pending_restores(connection)
        assert [(p.run_id, p.state, p.deadline) for p in pending] == [(run_id, "Ready", second.replace(microsecond=0))]

        tasks = scheduled_tasks(running, inventory)
        assert len(tasks) == 1
        task = tasks[0].adapted_properties
        assert task["TaskName"] == f"ipsec-deploy-restore-{run_id}"
        assert task["TaskPath"] == "\\"

        clock.advance(timedelta(minutes=15))
        assert len(confirm.pending_restores(connection)) == 1
    finally:
        connection.close()


def test_task_runs_restore_script_as_system(lab):
    running, inventory = lab
    connection = connect(running, inventory)
    try:
        run_id = new_run_id()
        confirm.arm_restore(connection, run_id, GROUP, STORE, [], running.network.clock.now() + timedelta(minutes=10))
    finally:
        connection.close()
    task = running.hosts[HOST].state.scheduled_tasks[f"ipsec-deploy-restore-{run_id}".lower()]
    assert task["UserId"] == "SYSTEM"
    assert task["LogonType"] == "ServiceAccount"
    assert task["RunLevel"] == "Highest"
    assert task["Execute"].endswith("\\System32\\WindowsPowerShell\\v1.0\\powershell.exe")
    assert task["Arguments"] == (
        "-NoProfile -NonInteractive -ExecutionPolicy Bypass "
        f"-File \"C:\\ProgramData\\ipsec-deploy\\restore-{run_id}\\restore.ps1\" -RunId {run_id}"
    )


def test_pending_restores_lists_armed_run(lab):
    running, inventory = lab
    clock = running.network.clock
    connection = connect(running, inventory)
    try:
        assert confirm.pending_restores(connection) == []
        run_id = new_run_id()
        deadline = clock.now() + timedelta(minutes=3)
        confirm.arm_restore(connection, run_id, GROUP, STORE, [], deadline)

        [pending] = confirm.pending_restores(connection)
        assert pending.run_id == run_id
        assert pending.host == HOST
        assert pending.deadline == deadline.replace(microsecond=0)
        assert pending.pending
    finally:
        connection.close()


@pytest.mark.parametrize("run_id", INVALID_RUN_IDS)
def test_invalid_run_id_rejected_by_scripts(lab, run_id):
    running, inventory = lab
    connection = connect(running, inventory)
    deadline = confirm.format_utc(running.network.clock.now() + timedelta(minutes=10))
    try:
        arm_parameters = {"RunId": run_id, "Group": GROUP, "PolicyStore": STORE, "Restore": [], "Deadline": deadline}
        with pytest.raises(RemoteCommandFailed) as armed:
            connection.run_script(arm_restore_script(), arm_parameters)
        with pytest.raises(RemoteCommandFailed) as disarmed:
            connection.run_script(disarm_restore_script(), {"RunId": run_id})
    finally:
        connection.close()
    expected = "because it is an empty string" if run_id == "" else f"Invalid RunId '{run_id}'"
    assert expected in armed.value.errors[0].message
    assert expected in disarmed.value.errors[0].message
    assert scheduled_tasks(running, inventory) == []
    assert running.hosts[HOST].state.files == {}


@pytest.mark.parametrize("run_id", INVALID_RUN_IDS)
def test_invalid_run_id_rejected_by_library(run_id):
    with pytest.raises(ValueError, match="invalid run id"):
        confirm.check_run_id(run_id)


def test_new_run_id_passes_check():
    run_id = new_run_id()
    assert confirm.check_run_id(run_id) == run_id


def test_past_deadline_rejected(lab):
    running, inventory = lab
    connection = connect(running, inventory)
    try:
        with pytest.raises(RemoteCommandFailed, match="is not in the future"):
            confirm.arm_restore(connection, new_run_id(), GROUP, STORE, [], running.network.clock.now())
    finally:
        connection.close()
    assert scheduled_tasks(running, inventory) == []


def test_naive_deadline_rejected():
    with pytest.raises(ValueError, match="no time zone"):
        confirm.format_utc(confirm.datetime(2024, 1, 15, 9, 0))


def test_restore_operations_put_sets_before_rules():
    objects = build_plan(load_inventory(EXAMPLE_LAB)).host(HOST).objects
    operations = confirm.restore_operations(list(reversed(objects)), STORE)
    cmdlets = [operation["Cmdlet"] for operation in operations]
    first_rule = min(i for i, c in enumerate(cmdlets) if c in ("New-NetIPsecMainModeRule", "New-NetIPsecRule"))
    assert all(c.endswith("Set") for c in cmdlets[:first_rule])
    assert all(c.endswith("Rule") for c in cmdlets[first_rule:])
    assert all(operation["Parameters"]["PolicyStore"] == STORE for operation in operations)


# The scripts themselves


def run_id_patterns(text: str) -> set[str]:
    return set(re.findall(r"-cnotmatch '\^(.*?)\\z'", text))


def test_scripts_and_counterparts_share_run_id_pattern():
    python_patterns = {confirm.RUN_ID_PATTERN.pattern, shipped_restore_scripts.RUN_ID_PATTERN.pattern}
    assert len(python_patterns) == 1
    for name in ("arm_restore.ps1", "disarm_restore.ps1"):
        assert run_id_patterns((SCRIPTS / name).read_text(encoding="utf-8")) == python_patterns, name
    list_text = (SCRIPTS / "list_restores.ps1").read_text(encoding="utf-8")
    assert f"$runIdPattern = '{confirm.RUN_ID_PATTERN.pattern}'" in list_text


@pytest.mark.parametrize("name", ["arm_restore.ps1", "disarm_restore.ps1", "list_restores.ps1", "restore.ps1"])
def test_restore_scripts_parse(name):
    if name == "restore.ps1":
        text = shipped_restore_scripts.embedded_restore_script((SCRIPTS / "arm_restore.ps1").read_text(encoding="utf-8"))
        assert text is not None
    else:
        text = (SCRIPTS / name).read_text(encoding="utf-8")
    tree = get_parser("powershell").parse(text.encode("utf-8"))
    assert syntax_problems(tree.root_node) == []


def test_restore_counterparts_match_script_files():
    for script in shipped_restore_scripts.RESTORE_SHIPPED_SCRIPTS:
        assert script.current_sha256() == script.sha256, (
            f"{script.file_name} changed: update its counterpart in ipsec_deploy/lab/shipped_restore_scripts.py, "
            "then its digest"
        )
