"""Fixed-script registry, persistence across handlers and the lab clock."""

from __future__ import annotations

from datetime import timedelta

from ipsec_deploy.lab.netsecurity import HostFacts, LabNetwork, NetSecurityHandler, ScriptRegistry
from ipsec_deploy.lab.netsecurity.requests import command, pipeline, script

REMOVE_GROUP_SCRIPT = """param([string]$Group)
$ErrorActionPreference = 'Stop'
Get-NetIPsecRule -Group $Group -ErrorAction SilentlyContinue | Remove-NetIPsecRule
"""


def remove_group(host, parameters, input):
    """Counterpart of REMOVE_GROUP_SCRIPT."""
    rules = host.invoke("Get-NetIPsecRule", {"Group": parameters["Group"], "ErrorAction": "SilentlyContinue"}).output
    if rules:
        host.invoke_checked("Remove-NetIPsecRule", {}, input=rules)
    return [len(rules)]


def facts() -> HostFacts:
    return HostFacts("SRV1", ["10.0.1.10"], domain="corp.example")


def test_unregistered_script_fails():
    host = LabNetwork().add_host(facts())

    result = NetSecurityHandler(host, ScriptRegistry()).run_pipeline(pipeline(script("Get-Process | Stop-Process")))

    assert result.state == "Failed"
    assert result.failure.category == "PermissionDenied"
    assert result.failure.fully_qualified_error_id == "ScriptsNotAllowed"
    assert "structured commands" in result.failure.message


def test_registered_script_runs_counterpart():
    host = LabNetwork().add_host(facts())
    scripts = ScriptRegistry()
    scripts.register(REMOVE_GROUP_SCRIPT, remove_group)
    host.invoke_checked("New-NetIPsecRule", {"DisplayName": "a", "Group": "ipsec-deploy"})
    host.invoke_checked("New-NetIPsecRule", {"DisplayName": "b", "Group": "other"})

    result = NetSecurityHandler(host, scripts).run_pipeline(
        pipeline(script(REMOVE_GROUP_SCRIPT.replace("\n", "\r\n"), Group="ipsec-deploy"))
    )

    assert result.state == "Completed", result.failure
    assert result.output == [1]
    assert [o.properties["DisplayName"] for o in host.invoke_checked("Get-NetIPsecRule")] == ["b"]


def test_changed_script_text_fails():
    host = LabNetwork().add_host(facts())
    scripts = ScriptRegistry()
    scripts.register(REMOVE_GROUP_SCRIPT, remove_group)

    result = NetSecurityHandler(host, scripts).run_pipeline(
        pipeline(script(REMOVE_GROUP_SCRIPT + "# edited\n", Group="x"))
    )

    assert result.state == "Failed"
    assert result.failure.fully_qualified_error_id == "ScriptsNotAllowed"


def test_state_persists_across_handlers(tmp_path):
    first = LabNetwork(tmp_path).add_host(facts())
    NetSecurityHandler(first).run_pipeline(pipeline(command("New-NetIPsecRule", DisplayName="r", IPsecRuleName="r1")))

    second_network = LabNetwork(tmp_path)
    second = second_network.add_host(facts())
    listed = NetSecurityHandler(second).run_pipeline(pipeline(command("Get-NetIPsecRule")))

    assert [o.properties["Name"] for o in listed.output] == ["r1"]
    assert second.write_count == 1

    # A write through the second instance is seen by the first one on its next command.
    NetSecurityHandler(second).run_pipeline(pipeline(command("Remove-NetIPsecRule", Name="r1")))
    again = NetSecurityHandler(first).run_pipeline(pipeline(command("Get-NetIPsecRule")))
    assert again.output == []
    assert first.write_count == 2


def test_second_apply_sends_no_write(tmp_path):
    host = LabNetwork(tmp_path).add_host(facts())
    handler = NetSecurityHandler(host)
    handler.run_pipeline(pipeline(command("New-NetIPsecRule", DisplayName="r", IPsecRuleName="r1")))
    before = host.write_count

    handler.run_pipeline(pipeline(command("Get-NetIPsecRule", Name="r1")))

    assert host.write_count == before
    assert host.write_log[-1]["cmdlet"] == "New-NetIPsecRule"


def test_clock_persists_and_moves(tmp_path):
    network = LabNetwork(tmp_path)
    start = network.clock.now()

    network.clock.advance(timedelta(hours=2))
    reloaded = LabNetwork(tmp_path)

    assert reloaded.clock.now() == start + timedelta(hours=2)
