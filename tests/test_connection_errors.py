"""Connection errors as the user sees them: the real client against lab hosts and servers on loopback.

Each message names the host and the endpoint, states what went wrong and
the next step, and never shows a traceback or a library's raw exception text.
"""

from __future__ import annotations

import http.server
import importlib.util
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e_helpers import PASSWORD_VARIABLE, free_listen_ports, run_cli, with_password_env

PASSWORD = "Lab-Passw0rd"
USERNAME = "CORP\\ipsec-admin"


def inventory_text(transport: str = "http", auth: str = "negotiate", port: int | None = None, lab_scheme: str | None = None) -> str:
    """Return a one-host inventory for SRV01 on 127.0.0.1, with a lab section for lab_factory."""
    host_connection = {"port": port} if port is not None else {}
    lab_host = {"scheme": lab_scheme} if lab_scheme else {}
    document = {
        "connection": {"transport": transport, "auth": auth, "username": USERNAME},
        "forests": {"corp.example": {}},
        "hosts": {"SRV01": {"address": "127.0.0.1", "ip": ["10.0.1.10"], "domain": "corp.example", "connection": host_connection}},
        "lab": {"password": PASSWORD, "hosts": {"SRV01": lab_host}},
    }
    return yaml.safe_dump(document, sort_keys=False)


def set_connection(inventory: Path, **settings: str) -> Path:
    """Change the client's connection settings in the inventory. A running lab keeps the settings it started with."""
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    document["connection"].update(settings)
    inventory.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return inventory


def endpoint_of(inventory: Path) -> str:
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    return f"{document['connection']['transport']}://127.0.0.1:{document['hosts']['SRV01']['connection']['port']}/wsman"


def start_lab_host(lab_factory, text: str, **client_settings: str) -> tuple[Path, str]:
    """Start SRV01 in the lab and return the client's inventory and endpoint.

    The client reads the password from PASSWORD_VARIABLE and uses
    ``client_settings`` in place of the lab's connection settings.
    """
    running, inventory = lab_factory(text)
    inventory = set_connection(with_password_env(inventory), **client_settings)
    return inventory, endpoint_of(inventory)


def write_inventory(tmp_path: Path, port: int) -> tuple[Path, str]:
    """Write an inventory for SRV01 at a port on 127.0.0.1 that no lab serves, and return it with its endpoint."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(inventory_text(port=port), encoding="utf-8")
    inventory = with_password_env(inventory)
    return inventory, endpoint_of(inventory)


def failed_dry_run(inventory: Path, tmp_path: Path, attempts: int = 3) -> str:
    """Run apply --dry-run, check that it failed without a traceback, and return its output.

    The output's lines are joined with single spaces, because the console
    wraps long messages.
    """
    result = run_cli("apply", str(inventory), "--dry-run", "--attempts", str(attempts), "--journal-dir", str(tmp_path / "journal"))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.exit_code == 1, output
    assert "Traceback" not in output
    return output


def retries_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if "retrying" in record.getMessage()]


class NotWinrmHandler(http.server.BaseHTTPRequestHandler):
    """A plain web server without POST, so it responds to WS-Management requests with HTTP 501."""

    requests_seen = 0

    def handle_one_request(self) -> None:
        type(self).requests_seen += 1
        super().handle_one_request()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[http.server.ThreadingHTTPServer]:
    handler = type("CountingHandler", (NotWinrmHandler,), {"requests_seen": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_https_against_http_listener(lab_factory, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    inventory, endpoint = start_lab_host(lab_factory, inventory_text(transport="https", lab_scheme="http"))

    with caplog.at_level(logging.WARNING):
        output = failed_dry_run(inventory, tmp_path)

    assert f"SRV01: not read: the listener at {endpoint} does not use TLS" in output
    assert "as a plain-HTTP listener does" in output
    assert "Check the host's transport and port in the inventory" in output
    assert "WinRM listens on port 5985 for HTTP and on 5986 for HTTPS" in output
    assert "ca_bundle" not in output
    assert "certificate" not in output
    assert "WRONG_VERSION_NUMBER" not in output
    assert retries_in(caplog) == []


def test_untrusted_certificate_suggests_ca_bundle(lab_factory, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    inventory, endpoint = start_lab_host(lab_factory, inventory_text(transport="https"))

    with caplog.at_level(logging.WARNING):
        output = failed_dry_run(inventory, tmp_path)

    assert f"SRV01: not read: the TLS certificate of {endpoint} failed validation: unable to get local issuer certificate" in output
    assert "Set ca_bundle to a file with the CA that issued the host's WinRM certificate" in output
    assert "does not use TLS" not in output
    assert retries_in(caplog) == []


def test_refused_connection_is_retried(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    [port] = free_listen_ports(1)
    inventory, endpoint = write_inventory(tmp_path, port)

    with caplog.at_level(logging.WARNING):
        output = failed_dry_run(inventory, tmp_path, attempts=2)

    assert f"SRV01: not read: cannot connect to the WinRM listener: connection refused at {endpoint}" in output
    assert "Check the host's address, port and transport in the inventory" in output
    assert "WinRM is enabled on the host (run Enable-PSRemoting, or winrm quickconfig)" in output
    assert "Max retries exceeded" not in output
    assert "Errno" not in output
    assert "HTTPConnectionPool" not in output
    retries = retries_in(caplog)
    assert len(retries) == 1
    assert retries[0].startswith("SRV01: opening the session failed")
    assert "attempt 2 of 2" in retries[0]


def test_web_server_is_not_winrm(web_server, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    port = web_server.server_address[1]
    inventory, endpoint = write_inventory(tmp_path, port)

    with caplog.at_level(logging.WARNING):
        output = failed_dry_run(inventory, tmp_path)

    assert f"SRV01: not read: the server at {endpoint} did not answer as WinRM: HTTP 501 Not Implemented" in output
    assert "Check that the host's port is its WinRM listener and not another web service" in output
    assert "<html" not in output.lower()
    pypsrp_errors = [record for record in caplog.records if record.name.startswith("pypsrp") and record.levelno >= logging.ERROR]
    assert pypsrp_errors == []
    assert retries_in(caplog) == []
    assert web_server.RequestHandlerClass.requests_seen == 1


MISSING_LIBRARY_CASES = [
    pytest.param(
        "kerberos", "Kerberos", "gssapi",
        ["Kerberos from Linux or macOS needs the gssapi and krb5 libraries", "pip install 'pyspnego[kerberos]'", "krb5.conf"],
        marks=pytest.mark.skipif(importlib.util.find_spec("gssapi") is not None, reason="gssapi is installed, so Kerberos does not fail on import"),
        id="kerberos",
    ),
    pytest.param(
        "credssp", "CredSSP", "requests_credssp",
        ["pip install 'pypsrp[credssp]'"],
        marks=pytest.mark.skipif(importlib.util.find_spec("requests_credssp") is not None, reason="requests-credssp is installed"),
        id="credssp",
    ),
]


@pytest.mark.parametrize(("auth", "label", "module", "advice"), MISSING_LIBRARY_CASES)
def test_missing_auth_library_named(lab_factory, monkeypatch, tmp_path, caplog, auth, label, module, advice):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    inventory, endpoint = start_lab_host(lab_factory, inventory_text(), auth=auth)

    with caplog.at_level(logging.WARNING):
        output = failed_dry_run(inventory, tmp_path)

    assert f"SRV01: not read: cannot authenticate to {endpoint} with {label} because the Python module {module} is not installed" in output
    for line in advice:
        assert line in output
    assert "ImportError" not in output
    assert "GSSAPIProxy" not in output
    assert retries_in(caplog) == []


def test_wrong_password_names_user_and_variable(lab_factory, monkeypatch, tmp_path, caplog):
    wrong_password = "Wrong-Passw0rd-7"
    monkeypatch.setenv(PASSWORD_VARIABLE, wrong_password)
    inventory, endpoint = start_lab_host(lab_factory, inventory_text())

    # The root logger at DEBUG captures pypsrp's and requests' records too.
    with caplog.at_level(logging.DEBUG):
        output = failed_dry_run(inventory, tmp_path)

    assert f"SRV01: not read: the host rejected the credentials (HTTP 401) of user {USERNAME} at {endpoint}" in output
    assert f"Check the user name and the password in the environment variable {PASSWORD_VARIABLE} (named by password_env)" in output
    assert wrong_password not in output
    assert wrong_password not in caplog.text
    assert retries_in(caplog) == []


def test_lab_rejection_names_lab_password(tmp_path):
    # Under --lab the password comes from the lab section, whatever password_env names.
    [port] = free_listen_ports(1)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "connection: {transport: http, auth: negotiate, username: 'CORP\\\\ipsec-admin', password_env: UNUSED_VARIABLE}\n"
        "forests: {corp.example: {}}\n"
        f"hosts:\n  SRV01: {{address: 127.0.0.1, connection: {{port: {port}}}, ip: [10.0.1.10], domain: corp.example}}\n"
        "lab: {password: Lab-Passw0rd, hosts: {SRV01: {faults: {reject_credentials: true}}}}\n",
        encoding="utf-8",
    )

    result = run_cli("apply", str(inventory), "--lab", "--lab-state", str(tmp_path / "state"), "--dry-run",
                     "--journal-dir", str(tmp_path / "j"))

    assert result.exit_code == 1
    output = " ".join((result.stdout + result.stderr).split())
    assert "Check the user name and the lab section's password." in output
    assert "UNUSED_VARIABLE" not in output


def unresolvable_host(tmp_path: Path, monkeypatch, name: str, error_number: int, message: str) -> tuple[Path, list[str]]:
    """Write an inventory whose SRV01 address fails to resolve; return it and the list of lookups of that name.

    The lookup fails inside this process, so no DNS query leaves the machine.
    """
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    original = socket.getaddrinfo
    looked_up: list[str] = []

    def lookup(host, *args, **kwargs):
        if host == name:
            looked_up.append(host)
            raise socket.gaierror(error_number, message)
        return original(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    inventory, _ = write_inventory(tmp_path, 5985)
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    document["hosts"]["SRV01"]["address"] = name
    inventory.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return inventory, looked_up


def test_unresolvable_address_names_address(tmp_path, monkeypatch, caplog):
    inventory, looked_up = unresolvable_host(tmp_path, monkeypatch, "winrm-typo.corp.example", socket.EAI_NONAME, "Name or service not known")

    with caplog.at_level(logging.WARNING):
        output = failed_dry_run(inventory, tmp_path)

    assert ("SRV01: not read: cannot resolve the address 'winrm-typo.corp.example' of "
            "http://winrm-typo.corp.example:5985/wsman: Name or service not known.") in output
    assert "Check the host's address in the inventory and this workstation's DNS." in output
    assert retries_in(caplog) == []
    assert looked_up == ["winrm-typo.corp.example"]


def test_dns_timeout_is_retried(tmp_path, monkeypatch):
    # EAI_AGAIN means the DNS server did not answer in time, which may pass.
    inventory, looked_up = unresolvable_host(tmp_path, monkeypatch, "winrm-slow-dns.corp.example", socket.EAI_AGAIN,
                                             "Temporary failure in name resolution")

    output = failed_dry_run(inventory, tmp_path, attempts=2)

    assert "cannot resolve the address 'winrm-slow-dns.corp.example'" in output
    assert looked_up == ["winrm-slow-dns.corp.example"] * 2


def test_missing_ca_bundle_named(lab_factory, monkeypatch, tmp_path):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    inventory, endpoint = start_lab_host(lab_factory, inventory_text(transport="https", lab_scheme="https"),
                                         ca_bundle="missing-ca.pem")

    output = failed_dry_run(inventory, tmp_path, attempts=1)

    # The loader reads the relative path from the inventory's folder and warns first.
    missing = inventory.parent / "missing-ca.pem"
    assert f"ca_bundle 'missing-ca.pem' of connection is not a file ({missing})" in output
    assert f"SRV01: not read: cannot use the TLS files for {endpoint}:" in output
    assert "Check ca_bundle, client_certificate and client_key in the inventory." in output
