"""Unmanaged rules with address ranges or keywords (LocalSubnet) are read and warned about; every session is closed."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ipsec_deploy.cli import app
from tests.e2e_helpers import EXAMPLE_LAB, PASSWORD_VARIABLE, with_password_env


@pytest.mark.parametrize("remote", ["10.0.9.0/24", "10.0.9.1-10.0.9.20", "LocalSubnet"])
def test_foreign_rule_with_range(lab_factory, monkeypatch, tmp_path, remote):
    monkeypatch.setenv(PASSWORD_VARIABLE, "Lab-Passw0rd")
    text = EXAMPLE_LAB.read_text().replace("RemoteAddress: [10.0.9.0/24]", f"RemoteAddress: [{remote}]")
    running, inventory = lab_factory(text)
    inventory = with_password_env(inventory)
    result = CliRunner().invoke(app, ["apply", str(inventory), "--dry-run", "--journal-dir", str(tmp_path / "j")], env={"COLUMNS": "200"})
    open_shells = {name: len(listener.service.shells) for name, listener in running.listeners.items() if listener.service}
    print("exit:", result.exit_code, "exception:", repr(result.exception))
    print("shells still open on the lab hosts after the command returned:", open_shells)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert sum(open_shells.values()) == 0
