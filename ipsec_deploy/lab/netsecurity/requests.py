"""Build ``PipelineRequest``s in tests and script counterparts without spelling out the dataclasses."""

from __future__ import annotations

from typing import Any

from ipsec_deploy.lab.pipeline import CommandCall, PipelineRequest


def command(name: str, *positional: Any, **parameters: Any) -> CommandCall:
    """Return a structured command; a parameter given as True is a switch."""
    arguments: list[tuple[str | None, Any]] = [(None, value) for value in positional]
    arguments += list(parameters.items())
    return CommandCall(name, False, arguments)


def script(text: str, **parameters: Any) -> CommandCall:
    return CommandCall(text, True, list(parameters.items()))


def pipeline(*commands: CommandCall, input: list[Any] | None = None) -> PipelineRequest:
    return PipelineRequest(list(commands), input or [])
