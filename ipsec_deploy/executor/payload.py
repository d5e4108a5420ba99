"""Turn operations into the typed parameter of the apply_changes script."""

from __future__ import annotations

import os
from typing import Any

from ..cmdlets import CmdletCall, ParameterValue, SecretFromEnvironment
from .diff import Operation


class PayloadError(Exception):
    """An operation that cannot be sent, such as a pre-shared key whose variable is not set."""


def _value(value: ParameterValue, environment: dict[str, str]) -> Any:
    if isinstance(value, SecretFromEnvironment):
        secret = environment.get(value.variable)
        if secret is None:
            raise PayloadError(f"the environment variable {value.variable} that holds a pre-shared key is not set")
        return secret
    if isinstance(value, tuple):
        return list(value)
    return value


def call_payload(call: CmdletCall, environment: dict[str, str]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    proposals: dict[str, Any] = {}
    for name, value in call.parameters:
        if isinstance(value, tuple) and value and isinstance(value[0], CmdletCall):
            proposals[name] = [call_payload(proposal, environment) for proposal in value]
        else:
            parameters[name] = _value(value, environment)
    payload: dict[str, Any] = {"Cmdlet": call.name, "Parameters": parameters}
    if proposals:
        payload["Proposals"] = proposals
    return payload


def operations_payload(operations: list[Operation], environment: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Build the Operations parameter of apply_changes; secrets are resolved only here, in memory."""
    environment = dict(os.environ) if environment is None else environment
    payload = []
    for operation in operations:
        entry = call_payload(operation.call, environment)
        entry["Undo"] = [call_payload(undo, environment) for undo in operation.undo]
        payload.append(entry)
    return payload
