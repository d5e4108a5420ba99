"""The plan command as a user runs it: the installed console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.inventory_texts import TWO_HOSTS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "inventory" / "example.yaml"


def run_cli(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    environment = dict(os.environ, COLUMNS="160", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "ipsec_deploy.cli", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


def test_plan_table_shows_hosts_and_pairs():
    result = run_cli("plan", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    for host in ("APP-SRV01", "DB-SRV01", "REPORT-SRV01", "PARTNER-APP01"):
        assert host in result.stdout
    assert "Mirrored pairs" in result.stdout
    assert "reports-sql-endpoint2" in result.stdout
    assert "TCP local 1433" in result.stdout


def test_plan_json_is_parseable():
    result = run_cli("plan", str(EXAMPLE), "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["format_version"] == 1
    assert [h["name"] for h in document["hosts"]] == ["APP-SRV01", "DB-SRV01", "PARTNER-APP01", "REPORT-SRV01"]
    assert len(document["pairs"]) == 11


def test_plan_powershell_writes_files(tmp_path):
    result = run_cli("plan", str(EXAMPLE), "--format", "powershell", "--out", str(tmp_path / "scripts"))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "scripts").iterdir())
    assert written == ["APP-SRV01.ps1", "DB-SRV01.ps1", "PARTNER-APP01.ps1", "REPORT-SRV01.ps1"]
    assert "New-NetIPsecRule @ipsecRuleParameters" in (tmp_path / "scripts" / "DB-SRV01.ps1").read_text()


def test_plan_limit_selects_hosts():
    result = run_cli("plan", str(EXAMPLE), "--format", "json", "--limit", "db-*,sql-clients")
    assert result.returncode == 0, result.stderr
    assert [h["name"] for h in json.loads(result.stdout)["hosts"]] == ["DB-SRV01", "REPORT-SRV01"]


def test_plan_limit_without_match_is_usage_error():
    result = run_cli("plan", str(EXAMPLE), "--limit", "WEB-*")
    assert result.returncode == 2
    assert "no host or group matches 'WEB-*'" in result.stderr
    # The example inventory has the group sql-clients, which --limit also accepts.
    assert "groups are: sql-clients" in " ".join(result.stderr.replace("│", " ").split())
    assert "Traceback" not in result.stderr


def test_invalid_inventory_lists_problems(tmp_path):
    inventory = tmp_path / "bad.yaml"
    inventory.write_text(TWO_HOSTS.replace("ip: [10.0.1.20]", "ip: [10.0.1.300]").replace("integrity: SHA256", "integrity: MD5"))
    result = run_cli("plan", str(inventory))
    assert result.returncode == 1
    assert f"{inventory}:9: invalid IP address '10.0.1.300'" in result.stderr
    assert f"{inventory}:19: weak algorithm MD5" in result.stderr
    assert "2 error(s)" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_inventory_file(tmp_path):
    result = run_cli("plan", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert "inventory file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_option_is_usage_error():
    result = run_cli("plan", str(EXAMPLE), "--formt", "json")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_out_needs_powershell_format(tmp_path):
    result = run_cli("plan", str(EXAMPLE), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "--out only applies to --format powershell" in result.stderr


def test_warnings_printed_with_json(tmp_path):
    inventory = tmp_path / "weak.yaml"
    inventory.write_text("allow_weak_crypto: true\n" + TWO_HOSTS.replace("key_exchange: DH14", "key_exchange: DH2"))
    result = run_cli("plan", str(inventory), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "warning: weak algorithm DH2" in result.stderr
    assert json.loads(result.stdout)["warnings"][0]["severity"] == "warning"


def test_help_explains_plan():
    result = run_cli("plan", "--help")
    assert result.returncode == 0
    assert "without contacting any host" in result.stdout
    assert "--limit" in result.stdout


def test_line_hundred_is_printed_plainly(tmp_path):
    padding = "".join(f"# comment line {n}\n" for n in range(1, 100))
    inventory = tmp_path / "long.yaml"
    inventory.write_text(padding + "polices: []\n" + TWO_HOSTS)
    result = run_cli("plan", str(inventory))
    assert result.returncode == 1
    assert f"{inventory}:100: unknown key 'polices'" in result.stderr


def test_markup_in_values_is_printed_plainly(tmp_path):
    inventory = tmp_path / "markup.yaml"
    inventory.write_text(TWO_HOSTS.replace("endpoint2: [DB-SRV01]", "endpoint2: ['[/red]DB']"))
    result = run_cli("plan", str(inventory))
    assert result.returncode == 1
    assert "'[/red]DB'" in result.stderr
    assert "Traceback" not in result.stderr
