"""The lab clock: simulated time that tests move by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

DEFAULT_START = datetime(2024, 1, 15, 9, 0, 0, tzinfo=timezone.utc)


class LabClock:
    """Simulated UTC time shared by every host of a lab network.

    Time moves only when a test calls ``advance`` or ``set``; event
    timestamps, SA lifetimes and scheduled task deadlines are measured on
    it. The network's ``on_change`` runs the tasks that become due.
    """

    def __init__(self, now: datetime = DEFAULT_START, on_change: Callable[[], None] | None = None) -> None:
        self._now = self._as_utc(now)
        self.on_change = on_change

    @staticmethod
    def _as_utc(value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def now(self) -> datetime:
        return self._now

    def set(self, value: datetime) -> None:
        self._now = self._as_utc(value)
        if self.on_change is not None:
            self.on_change()

    def advance(self, delta: timedelta | float) -> datetime:
        """Move time forward by a timedelta or a number of seconds and return the new time."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        if delta < timedelta(0):
            raise ValueError(f"the lab clock only moves forward; got {delta}")
        self.set(self._now + delta)
        return self._now

    def to_json(self) -> str:
        return self._now.isoformat()

    def load_json(self, text: str) -> None:
        self._now = self._as_utc(datetime.fromisoformat(text))
