"""Passwords: one prompt per user name, even when sessions open in parallel, and errors that name the fix."""

from __future__ import annotations

import threading
import time

import pytest

from ipsec_deploy.executor.run import Executor
from ipsec_deploy.inventory import load_inventory
from ipsec_deploy.planner import build_plan
from ipsec_deploy.transport.credentials import CredentialError, CredentialSource
from ipsec_deploy.transport import credentials as credentials_module
from ipsec_deploy.transport.psrp import psrp_connector
from tests.e2e_helpers import run_cli
from tests.inventory_texts import lab_inventory

PASSWORD = "Lab-Passw0rd"

# Three hosts that share one user name and take their password from a prompt.
THREE_HOSTS = lab_inventory(
    [("APP-SRV01", "10.0.1.10"), ("DB-SRV01", "10.0.1.20"), ("WEB-SRV01", "10.0.1.30")], "[10.0.1.0/24]", "[10.0.1.0/24]", "vlan"
)


class CountingPrompt:
    """A terminal prompt that answers slowly and counts how often it was asked."""

    def __init__(self, answer: str = PASSWORD) -> None:
        self.answer = answer
        self.questions: list[str] = []

    def __call__(self, question: str) -> str:
        self.questions.append(question)
        # Slow enough that parallel callers overlap with the first prompt.
        time.sleep(0.05)
        return self.answer


def load_hosts(tmp_path, text: str = THREE_HOSTS):
    path = tmp_path / "inventory.yaml"
    path.write_text(text, encoding="utf-8")
    return load_inventory(path)


def test_parallel_callers_share_one_prompt(tmp_path):
    inventory = load_hosts(tmp_path)
    prompt = CountingPrompt()
    source = CredentialSource(environment={}, prompt=prompt, interactive=True)
    hosts = list(inventory.hosts.values()) * 3
    secrets = []

    threads = [threading.Thread(target=lambda host=host: secrets.append(source.password_for(host))) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(prompt.questions) == 1
    assert len(secrets) == len(hosts)
    assert {secret.reveal() for secret in secrets} == {PASSWORD}


def test_ask_up_front_prompts_once_per_user(tmp_path):
    text = THREE_HOSTS.replace(
        "  WEB-SRV01: {address: 127.0.0.1, connection: {port: 15987}, ip: [10.0.1.30], domain: corp.example}",
        "  WEB-SRV01: {address: 127.0.0.1, ip: [10.0.1.30], domain: corp.example, connection: {port: 15987, username: 'CORP\\web-admin'}}\n"
        "  ENV-SRV01: {address: 127.0.0.1, ip: [10.0.1.40], domain: corp.example, connection: {port: 15988, password_env: ENV_SRV_PASSWORD}}",
    )
    inventory = load_hosts(tmp_path, text)
    prompt = CountingPrompt()
    source = CredentialSource(environment={}, prompt=prompt, interactive=True)

    source.ask_up_front(inventory.hosts.values())

    # One prompt for each user name; the host with password_env is read from the environment later.
    assert len(prompt.questions) == 2
    assert "CORP\\ipsec-admin" in prompt.questions[0]
    assert "CORP\\web-admin" in prompt.questions[1]


def test_prompted_password_opens_every_session(lab_factory, tmp_path):
    # The real connector with the default number of forks: every host
    # connects with the one password typed at the prompt.
    running, rewritten = lab_factory(THREE_HOSTS)
    inventory = load_inventory(rewritten)
    plan = build_plan(inventory)
    prompt = CountingPrompt()
    source = CredentialSource(environment={}, prompt=prompt, interactive=True)
    executor = Executor(psrp_connector(source), plan.policy_store, plan.managed_group, forks=10)

    change_set = executor.prepare([(host_plan.host, host_plan.objects) for host_plan in plan.hosts])
    try:
        errors = {name: change.error for name, change in change_set.changes.items() if change.error}
        assert errors == {}
        assert len(prompt.questions) == 1
    finally:
        change_set.close()
    assert running.listeners["APP-SRV01"].round_trips.total > 0


def test_missing_variable_names_fix(tmp_path):
    text = THREE_HOSTS.replace("  username: CORP\\ipsec-admin\n", "  username: CORP\\ipsec-admin\n  password_env: MISSING_PASSWORD\n")
    inventory = load_hosts(tmp_path, text)
    source = CredentialSource(environment={}, interactive=False)

    with pytest.raises(CredentialError) as raised:
        source.password_for(inventory.hosts["DB-SRV01"])

    message = str(raised.value)
    assert message.startswith("DB-SRV01: ")
    assert "MISSING_PASSWORD" in message
    assert "$env:MISSING_PASSWORD" in message
    assert "export MISSING_PASSWORD" in message


def test_end_of_input_at_prompt_is_clear(tmp_path):
    inventory = load_hosts(tmp_path)

    def closed_terminal(question: str) -> str:
        raise EOFError

    source = CredentialSource(environment={}, prompt=closed_terminal, interactive=True)
    with pytest.raises(CredentialError) as raised:
        source.password_for(inventory.hosts["APP-SRV01"])

    assert str(raised.value) == "APP-SRV01: no password was entered for CORP\\ipsec-admin"


def test_secret_hidden_from_repr(tmp_path):
    inventory = load_hosts(tmp_path)
    source = CredentialSource(environment={}, prompt=CountingPrompt(), interactive=True)

    secret = source.password_for(inventory.hosts["APP-SRV01"])

    assert PASSWORD not in repr(secret)
    assert PASSWORD not in str(secret)
    assert PASSWORD not in f"{secret}"


class TerminalStdin:
    """Stands for sys in the credentials module, with a standard input that is a terminal."""

    class stdin:
        @staticmethod
        def isatty() -> bool:
            return True


def test_end_of_input_stops_command(tmp_path, monkeypatch):
    # Ctrl-D at the first prompt stops the command before any host is contacted.
    def closed_terminal(question: str) -> str:
        raise EOFError

    monkeypatch.setattr(credentials_module, "sys", TerminalStdin)
    monkeypatch.setattr(credentials_module.getpass, "getpass", closed_terminal)
    path = tmp_path / "inventory.yaml"
    path.write_text(THREE_HOSTS, encoding="utf-8")

    result = run_cli("apply", str(path), "--dry-run", "--journal-dir", str(tmp_path / "j"))

    assert result.exit_code == 1
    assert "error: APP-SRV01: no password was entered for CORP\\ipsec-admin; nothing was changed." in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
