"""Fault injection on lab listeners, as a pypsrp client sees it."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan
from spnego.exceptions import BadMICError

from ipsec_deploy.lab import server as server_module
from ipsec_deploy.lab.faults import FaultPlan
from ipsec_deploy.lab.pipeline import PipelineRequest, PipelineResult
from ipsec_deploy.lab.server import LabListener

USER = "vagrant"
PASSWORD = "Lab-Passw0rd"


class EchoHandler:
    def run_pipeline(self, request: PipelineRequest) -> PipelineResult:
        return PipelineResult(output=[request.commands[0].command])


def lab(**options: Any) -> LabListener:
    return LabListener(EchoHandler(), accounts={USER: PASSWORD}, **options)


def client(listener: LabListener, auth: str = "basic", **options: Any) -> WSMan:
    settings: dict[str, Any] = {
        "port": listener.port,
        "username": USER,
        "password": PASSWORD,
        "ssl": False,
        "auth": auth,
        "encryption": "never" if auth == "basic" else "auto",
        "operation_timeout": 2,
        "connection_timeout": 1,
        "read_timeout": 3,
        "reconnection_backoff": 0.01,
    }
    settings.update(options)
    return WSMan(listener.host, **settings)


def run_one(wsman: WSMan) -> list[Any]:
    with RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-NetIPsecRule")
        return ps.invoke()


def test_refused_connections_raise_connection_error() -> None:
    with lab(faults=FaultPlan(refuse_connections=True)) as listener:
        with pytest.raises(requests.exceptions.ConnectionError) as raised:
            run_one(client(listener))
        assert "refused" in str(raised.value).lower()
        assert listener.round_trips.snapshot()["total"] == 0

        listener.refuse_connections(False)
        assert run_one(client(listener)) == ["Get-NetIPsecRule"]


def test_refusing_while_open_breaks_the_pool() -> None:
    with lab() as listener:
        pool = RunspacePool(client(listener))
        pool.open()
        listener.refuse_connections(True)

        ps = PowerShell(pool)
        ps.add_cmdlet("Get-NetIPsecRule")
        with pytest.raises(requests.exceptions.ConnectionError):
            ps.invoke()


def test_latency_raises_read_timeout() -> None:
    with lab(faults=FaultPlan(latency=0.6)) as listener:
        with pytest.raises(requests.exceptions.ReadTimeout):
            run_one(client(listener, read_timeout=0.2))


def test_latency_below_timeout_only_slows() -> None:
    with lab(faults=FaultPlan(latency=0.05)) as listener:
        assert run_one(client(listener)) == ["Get-NetIPsecRule"]
        assert listener.round_trips.snapshot()["total"] == 5


@pytest.mark.parametrize("auth", ["basic", "negotiate"])
def test_rejected_credentials_raise_authentication_error(auth: str) -> None:
    with lab(faults=FaultPlan(reject_credentials=True)) as listener:
        with pytest.raises(AuthenticationError):
            run_one(client(listener, auth=auth))
        assert listener.round_trips.snapshot()["by_action"] == {}


def test_dropped_connection_raises_connection_error() -> None:
    with lab(faults=FaultPlan(drop_after_requests=2)) as listener:
        pool = RunspacePool(client(listener))
        pool.open()  # Create and one Receive

        ps = PowerShell(pool)
        ps.add_cmdlet("Get-NetIPsecRule")
        with pytest.raises(requests.exceptions.ConnectionError):
            ps.invoke()
        counts = listener.round_trips.snapshot()

    assert counts["dropped"] == 1
    assert counts["by_action"] == {"Create": 1, "Receive": 1}


def test_faults_change_while_running() -> None:
    with lab() as listener:
        assert run_one(client(listener)) == ["Get-NetIPsecRule"]

        listener.faults.reject_credentials = True
        with pytest.raises(AuthenticationError):
            run_one(client(listener))

        listener.faults.reject_credentials = False
        assert run_one(client(listener)) == ["Get-NetIPsecRule"]


def test_undecryptable_request_logs_one_line(monkeypatch, caplog) -> None:
    # A client interrupted mid-request leaves NTLM sequence numbers out of
    # step; the listener responds with 400 and logs a warning, not a traceback.
    def out_of_step(self, *args, **kwargs):
        raise BadMICError(context_msg="checksum mismatch")

    with lab(auth=("negotiate",)) as listener:
        monkeypatch.setattr(server_module.WinRMEncryption, "unwrap_message", out_of_step)
        with caplog.at_level("DEBUG", logger="ipsec_deploy.lab"):
            with pytest.raises(WinRMTransportError) as raised:
                run_one(client(listener, auth="negotiate"))

    assert raised.value.code == 400
    warnings = [r for r in caplog.records if r.name == "ipsec_deploy.lab" and "could not decrypt" in r.getMessage()]
    assert len(warnings) >= 1
    assert not [r for r in caplog.records if r.name == "ipsec_deploy.lab" and r.exc_info]
