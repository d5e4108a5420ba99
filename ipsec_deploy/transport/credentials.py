"""Passwords for WinRM sessions: from an environment variable or a prompt, never from a file.

A ``Secret`` hides its value from repr, str, logs and tracebacks; only
``reveal()`` returns it, at the moment pypsrp needs it.
"""

from __future__ import annotations

import getpass
import os
import sys
import threading
from typing import Callable, Iterable

from ..inventory.model import Host


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class CredentialError(Exception):
    """A password that cannot be obtained; the message names the variable or host, never a value."""


Prompt = Callable[[str], str]


class CredentialSource:
    """Finds each host's password once per user name and source, and caches it for the run."""

    def __init__(self, environment: dict[str, str] | None = None, prompt: Prompt | None = None, interactive: bool | None = None) -> None:
        self._environment = os.environ if environment is None else environment
        self._prompt = prompt or getpass.getpass
        self._interactive = sys.stdin.isatty() if interactive is None else interactive
        self._cache: dict[tuple[str | None, str | None], Secret] = {}
        # Sessions open in parallel, so hosts that share a user name must wait for one prompt.
        self._lock = threading.Lock()

    def ask_up_front(self, hosts: Iterable[Host]) -> None:
        """Prompt now for every password that comes from a prompt, once per user name.

        Call it before a progress display takes the terminal: a prompt under
        a live display is unreadable. Environment variables are read later,
        per host, so that a missing one fails only the hosts that name it.
        """
        for host in hosts:
            connection = host.connection
            if connection.auth != "certificate" and not connection.password_env and self._interactive:
                self.password_for(host)

    def password_for(self, host: Host) -> Secret | None:
        with self._lock:
            return self._find(host)

    def origin(self, host: Host) -> str:
        if host.connection.password_env:
            return f"the password in the environment variable {host.connection.password_env} (named by password_env)"
        return "the password entered at the prompt"

    def _find(self, host: Host) -> Secret | None:
        connection = host.connection
        if connection.auth == "certificate":
            return None
        key = (connection.username, connection.password_env)
        if key in self._cache:
            return self._cache[key]

        if connection.password_env:
            value = self._environment.get(connection.password_env)
            if value is None:
                name = connection.password_env
                raise CredentialError(
                    f"{host.name}: the environment variable {name} named by password_env is not set; "
                    f"set it in the shell that runs ipsec-deploy ($env:{name} = '...' in PowerShell, "
                    f"export {name}=... in bash), or remove password_env to be prompted"
                )
        elif self._interactive:
            user = connection.username or "the current user"
            try:
                value = self._prompt(f"Password for {user} (host {host.name}): ")
            except EOFError:
                raise CredentialError(f"{host.name}: no password was entered for {user}") from None
        else:
            raise CredentialError(
                f"{host.name}: no password_env is set and there is no terminal to prompt on; "
                "set password_env in the inventory's connection settings"
            )
        secret = Secret(value)
        self._cache[key] = secret
        return secret


class FixedCredentials:
    """One password for every host, as the lab uses."""

    def __init__(self, password: str, origin: str = "the lab section's password") -> None:
        self._secret = Secret(password)
        self._origin = origin

    def password_for(self, host: Host) -> Secret | None:
        return self._secret

    def origin(self, host: Host) -> str:
        return self._origin
