"""--log-level info shows each host's steps of a staged apply on standard error."""

from __future__ import annotations

from tests.e2e_helpers import PASSWORD_VARIABLE, run_cli, with_password_env
from tests.test_wrong_host import INVENTORY, PASSWORD


def test_info_log_shows_stages(lab_factory, monkeypatch, tmp_path, caplog):
    # pytest's capture handler takes the records, so they are read from caplog.
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    _, inventory = lab_factory(INVENTORY)

    result = run_cli("--log-level", "info", "apply", str(with_password_env(inventory)), "--yes",
                     "--journal-dir", str(tmp_path / "j"), "--verify-timeout", "5")

    assert result.exit_code == 0, result.stdout + result.stderr
    messages = "\n".join(record.getMessage() for record in caplog.records if record.name == "ipsec_deploy.rollout")
    for host in ("APP-SRV01", "DB-SRV01"):
        assert f"{host}: restore task ipsec-deploy-restore-" in messages
        assert f"{host}: request stage: 5 operation(s) applied" in messages
        assert f"{host}: raise stage: 1 operation(s) applied" in messages
        assert f"{host}: confirmed, restore task ipsec-deploy-restore-" in messages
    assert "verify stage: 1 pair result(s), hosts with failing pairs: none" in messages


def test_warning_log_hides_stages(lab_factory, monkeypatch, tmp_path, caplog):
    # The default level keeps a successful apply quiet on standard error.
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    _, inventory = lab_factory(INVENTORY)

    result = run_cli("apply", str(with_password_env(inventory)), "--yes", "--journal-dir", str(tmp_path / "j"), "--verify-timeout", "5")

    assert result.exit_code == 0, result.stdout + result.stderr
    assert not [record for record in caplog.records if record.name == "ipsec_deploy.rollout"]
