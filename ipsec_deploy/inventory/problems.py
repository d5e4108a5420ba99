"""Problems found in an inventory, each tied to a file and line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .model import Location

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    severity: Severity
    location: Location
    message: str

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.location}: {prefix}{self.message}"


class InventoryError(Exception):
    """Raised when an inventory has one or more errors; ``problems`` lists all of them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.location.file, p.location.line, p.message))
        errors = [p for p in self.problems if p.severity == "error"]
        super().__init__(f"{len(errors)} error(s) in inventory")


class ProblemCollector:
    """Gathers every problem so that all of them are reported at once."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, location: Location, message: str) -> None:
        self.problems.append(Problem("error", location, message))

    def warning(self, location: Location, message: str) -> None:
        self.problems.append(Problem("warning", location, message))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise InventoryError(self.problems)
