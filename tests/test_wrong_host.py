"""A session that reaches another computer than the inventory entry means is refused before any change."""

from __future__ import annotations

import yaml

from ipsec_deploy.executor.state import wrong_host_reason
from ipsec_deploy.inventory import load_inventory
from ipsec_deploy.inventory.model import netbios_name

from tests.e2e_helpers import PASSWORD_VARIABLE, run_cli, with_password_env
from tests.inventory_texts import lab_inventory

PASSWORD = "Lab-Passw0rd"

INVENTORY = lab_inventory([("APP-SRV01", "10.0.1.10"), ("DB-SRV01", "10.0.1.20")], "[APP-SRV01]", "[DB-SRV01]")


def swapped_ports(inventory, target):
    """Write a copy of the inventory in which the two hosts' WinRM ports are swapped."""
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    hosts = document["hosts"]
    app, db = hosts["APP-SRV01"]["connection"], hosts["DB-SRV01"]["connection"]
    app["port"], db["port"] = db["port"], app["port"]
    target.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return target


def test_swapped_ports_change_nothing(lab_factory, monkeypatch, tmp_path):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    running, inventory = lab_factory(INVENTORY)
    swapped = swapped_ports(with_password_env(inventory), tmp_path / "swapped.yaml")

    result = run_cli("apply", str(swapped), "--yes", "--journal-dir", str(tmp_path / "j"), "--verify-timeout", "0")

    assert result.exit_code == 1, result.stdout + result.stderr
    assert "answered as computer 'DB-SRV01', not 'APP-SRV01'" in result.stdout
    assert "answered as computer 'APP-SRV01', not 'DB-SRV01'" in result.stdout
    assert "set 'computer_name: DB-SRV01' on host 'APP-SRV01'" in result.stdout
    assert running.hosts["APP-SRV01"].write_count == 0
    assert running.hosts["DB-SRV01"].write_count == 0


def test_computer_name_accepts_other_computer(lab_factory, monkeypatch, tmp_path):
    # An entry whose computer_name names the computer behind its endpoint is changed there.
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    running, inventory = lab_factory(INVENTORY)
    swapped = swapped_ports(with_password_env(inventory), tmp_path / "swapped.yaml")
    document = yaml.safe_load(swapped.read_text(encoding="utf-8"))
    document["hosts"]["APP-SRV01"]["computer_name"] = "DB-SRV01"
    document["hosts"]["DB-SRV01"]["computer_name"] = "APP-SRV01"
    swapped.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    result = run_cli("apply", str(swapped), "--yes", "--journal-dir", str(tmp_path / "j"), "--no-verify")

    assert result.exit_code == 0, result.stdout + result.stderr
    assert "answered as computer" not in result.stdout
    assert running.hosts["APP-SRV01"].write_count > 0
    assert running.hosts["DB-SRV01"].write_count > 0


def test_swapped_ports_not_verified(lab_factory, monkeypatch, tmp_path):
    # Applied through the right endpoints, then verified through swapped ones.
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    _, inventory = lab_factory(INVENTORY)
    inventory = with_password_env(inventory)
    applied = run_cli("apply", str(inventory), "--yes", "--journal-dir", str(tmp_path / "j"), "--verify-timeout", "5")
    assert applied.exit_code == 0, applied.stdout + applied.stderr

    result = run_cli("verify", str(swapped_ports(inventory, tmp_path / "swapped.yaml")), "--verify-timeout", "1")

    assert result.exit_code == 1, result.stdout + result.stderr
    assert "answered as computer 'DB-SRV01', not 'APP-SRV01'" in result.stdout
    assert "0 of 1 pair(s) as planned" in result.stdout


def test_right_hosts_are_changed(lab_factory, monkeypatch, tmp_path):
    # The same inventory without the swap: each host reports its own name.
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    running, inventory = lab_factory(INVENTORY)

    result = run_cli("apply", str(with_password_env(inventory)), "--yes", "--journal-dir", str(tmp_path / "j"), "--verify-timeout", "0")

    assert result.exit_code == 0, result.stdout + result.stderr
    assert "answered as computer" not in result.stdout
    assert running.hosts["APP-SRV01"].write_count > 0
    assert running.hosts["DB-SRV01"].write_count > 0


def test_fqdn_host_names_match(lab_factory, monkeypatch, tmp_path):
    # Hosts keyed by their DNS names report only the first label, as Windows does.
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    text = INVENTORY.replace("APP-SRV01", "app-srv01.corp.example").replace("DB-SRV01", "db-srv01.corp.example")
    running, inventory = lab_factory(text)

    result = run_cli("apply", str(with_password_env(inventory)), "--yes", "--journal-dir", str(tmp_path / "j"), "--no-verify")

    assert result.exit_code == 0, result.stdout + result.stderr
    assert running.hosts["app-srv01.corp.example"].write_count > 0


def test_unusable_reported_name_not_suggested(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY, encoding="utf-8")
    host = load_inventory(path).hosts["APP-SRV01"]

    reason = wrong_host_reason(host, "")

    assert "answered as computer 'unknown', not 'APP-SRV01'" in reason
    assert "computer_name" not in reason
    assert wrong_host_reason(host, "app-srv01") is None


def test_ip_named_host_skips_check(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY.replace("APP-SRV01", "10.0.1.10"), encoding="utf-8")
    host = load_inventory(path).hosts["10.0.1.10"]

    assert wrong_host_reason(host, "APP-SRV01") is None


def test_netbios_name_of_long_dns_name():
    # Windows derives the computer name from the first DNS label, cut to 15 characters.
    assert netbios_name("reporting-server-01.corp.example") == "REPORTING-SERVE"
    assert netbios_name("db-srv01") == "DB-SRV01"
