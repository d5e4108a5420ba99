"""Passwords for WinRM sessions: from an environment variable or a prompt, never from a file.

A ``Secret`` hides its value from repr, str, logs and tracebacks; only
``reveal()`` returns it, at the moment pypsrp needs it.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Callable

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

    def password_for(self, host: Host) -> Secret | None:
        connection = host.connection
        if connection.auth == "certificate":
            return None
        key = (connection.username, connection.password_env)
        if key in self._cache:
            return self._cache[key]

        if connection.password_env:
            value = self._environment.get(connection.password_env)
            if value is None:
                raise CredentialError(
                    f"{host.name}: the environment variable {connection.password_env} named by "
                    "password_env is not set; export it, or remove password_env to be prompted"
                )
        elif self._interactive:
            value = self._prompt(f"Password for {connection.username or 'the current user'} (host {host.name}): ")
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

    def __init__(self, password: str) -> None:
        self._secret = Secret(password)

    def password_for(self, host: Host) -> Secret | None:
        return self._secret
