"""apply keeps its own WinRM session: the management exemption end to end against lab hosts."""

from __future__ import annotations

from ipsec_deploy.inventory import load_inventory
from ipsec_deploy.lab.runner import start_lab
from tests.e2e_helpers import PASSWORD_VARIABLE, free_listen_ports, run_cli, with_password_env

PASSWORD = "Lab-Passw0rd"

# The VLAN policy covers 10.0.0.0/16, where the admin workstation 10.0.9.5 is.
INVENTORY = """\
controller: [10.0.9.5]
management_exemption: true
connection:
  transport: http
  auth: negotiate
  username: CORP\\\\ipsec-admin
forests:
  corp.example: {}
hosts:
  APP-SRV01: {address: 127.0.0.1, connection: {port: 45301}, ip: [10.0.1.10], domain: corp.example}
  DB-SRV01: {address: 127.0.0.1, connection: {port: 45302}, ip: [10.0.1.20], domain: corp.example}
auth:
  kerberos: {phase1: [kerberos]}
crypto:
  strong:
    main_mode: [{encryption: AES256, hash: SHA256, key_exchange: DH14}]
    quick_mode: [{encryption: AES256, integrity: SHA256}]
policies:
  - name: campus
    endpoint1: [10.0.0.0/16]
    endpoint2: [10.0.0.0/16]
    auth: kerberos
    crypto: strong
lab:
  password: Lab-Passw0rd
  controller_address: 10.0.9.5
"""


def start(lab_factory, monkeypatch, text):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    running, inventory = lab_factory(text)
    return running, with_password_env(inventory)


def test_plan_without_exemption_is_refused(tmp_path):
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(INVENTORY.replace("management_exemption: true\n", ""))
    result = run_cli("plan", str(inventory))
    assert result.exit_code == 1
    assert "can cut ipsec-deploy's own connection" in result.stderr
    assert "set management_exemption: true" in result.stderr


def test_apply_with_exemption_keeps_session(lab_factory, monkeypatch, tmp_path):
    running, inventory = start(lab_factory, monkeypatch, INVENTORY)
    result = run_cli("apply", str(inventory), "--yes", "--journal-dir", str(tmp_path / "j"), "--verify-timeout", "0")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "ipsec-deploy-rule-management-exemption" in result.stdout

    # The session still works after the rules reached Require.
    again = run_cli("apply", str(inventory), "--yes", "--journal-dir", str(tmp_path / "j"), "--verify-timeout", "0")
    assert again.exit_code == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout
    assert running.listeners["APP-SRV01"].round_trips.dropped == 0


def write_unlisted_controller(path):
    """Write the inventory with the lab controller at 10.0.9.6, which the controller list lacks, on free ports."""
    first, second = free_listen_ports(2)
    text = INVENTORY.replace("controller_address: 10.0.9.5", "controller_address: 10.0.9.6")
    path.write_text(text.replace("port: 45301", f"port: {first}").replace("port: 45302", f"port: {second}"))
    return path


def test_unlisted_controller_address_refused_at_apply(tmp_path):
    # The workstation is really at 10.0.9.6, which the inventory does not
    # list. With --lab, the simulated controller address replaces the
    # connection's local address.
    inventory = write_unlisted_controller(tmp_path / "inv.yaml")
    state = tmp_path / "lab-state"
    result = run_cli("apply", str(inventory), "--lab", "--lab-state", str(state), "--yes", "--journal-dir", str(tmp_path / "j"))
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "from controller 10.0.9.6" in result.stderr
    assert "Refusing to apply: nothing was changed." in result.stderr

    with start_lab(load_inventory(inventory), state_dir=state, ports={"APP-SRV01": 0, "DB-SRV01": 0}) as running:
        assert sum(host.write_count for host in running.hosts.values()) == 0


def test_dry_run_shows_management_conflict(tmp_path):
    inventory = write_unlisted_controller(tmp_path / "inv.yaml")
    result = run_cli("apply", str(inventory), "--lab", "--lab-state", str(tmp_path / "state"), "--dry-run")
    assert result.exit_code == 1
    assert "from controller 10.0.9.6" in result.stderr
    assert "Dry run: nothing was changed." in result.stdout
