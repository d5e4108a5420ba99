"""The lab drops the controller's WinRM traffic once a host's rules require IPsec from it, as Windows would."""

from __future__ import annotations

import pytest
import requests
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

INVENTORY = """\
connection: {transport: http, auth: negotiate, username: 'CORP\\ipsec-admin'}
forests: {corp.example: {}}
hosts:
  APP-SRV01: {address: 127.0.0.1, connection: {port: 45201}, ip: [10.0.1.10], domain: corp.example}
lab:
  password: Lab-Passw0rd
  controller_address: 10.0.9.5
"""


def run(lab_port: int, cmdlet: str) -> list:
    wsman = WSMan("127.0.0.1", port=lab_port, ssl=False, username="CORP\\ipsec-admin", password="Lab-Passw0rd", no_proxy=True, connection_timeout=5, read_timeout=10, operation_timeout=5)
    with RunspacePool(wsman) as pool:
        shell = PowerShell(pool)
        shell.add_cmdlet(cmdlet)
        return shell.invoke()


def add_rule(running, **parameters) -> None:
    with running.network.transaction():
        running.network.host("APP-SRV01").invoke_checked("New-NetIPsecRule", parameters)


def test_require_from_controller_drops_session(lab_factory):
    running, _ = lab_factory(INVENTORY)
    port = running.listeners["APP-SRV01"].port
    assert run(port, "Get-NetIPsecRule") == []

    add_rule(running, DisplayName="all", IPsecRuleName="all", InboundSecurity="Require", OutboundSecurity="Require", RemoteAddress=["10.0.0.0/8"])
    with pytest.raises(requests.exceptions.ConnectionError):
        run(port, "Get-NetIPsecRule")
    assert running.listeners["APP-SRV01"].round_trips.dropped >= 1


def test_management_exemption_keeps_session(lab_factory):
    running, _ = lab_factory(INVENTORY)
    port = running.listeners["APP-SRV01"].port
    add_rule(running, DisplayName="all", IPsecRuleName="all", InboundSecurity="Require", OutboundSecurity="Require", RemoteAddress=["10.0.0.0/8"])
    add_rule(
        running,
        DisplayName="winrm",
        IPsecRuleName="winrm",
        InboundSecurity="None",
        OutboundSecurity="None",
        RemoteAddress=["10.0.9.5"],
        Protocol="TCP",
        LocalPort=[str(port)],
    )
    assert len(run(port, "Get-NetIPsecRule")) == 2


def test_request_rule_keeps_session(lab_factory):
    running, _ = lab_factory(INVENTORY)
    port = running.listeners["APP-SRV01"].port
    add_rule(running, DisplayName="all", IPsecRuleName="all", InboundSecurity="Request", OutboundSecurity="Request", RemoteAddress=["10.0.0.0/8"])
    assert len(run(port, "Get-NetIPsecRule")) == 1
