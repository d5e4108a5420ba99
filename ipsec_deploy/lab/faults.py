"""Transport faults that a lab listener can inject, to test how clients see a failing host."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FaultPlan:
    """Faults of one listener. Tests may change the fields while the listener runs.

    Each fault shows up in pypsrp 0.9.1 as a transport error:

    * ``refuse_connections``: the port is bound but not listening, so connects
      fail with ECONNREFUSED (``requests.exceptions.ConnectionError``). A
      change at run time takes effect through ``LabListener.refuse_connections()``.
    * ``latency``: seconds to wait before each reply; more than the client's
      read timeout gives ``requests.exceptions.ReadTimeout``.
    * ``reject_credentials``: every request gets 401, as for a wrong password
      (``pypsrp.exceptions.AuthenticationError``).
    * ``drop_after_requests``: after that many requests, each further request
      has its TCP connection closed with no reply (``ConnectionError``).
    """

    refuse_connections: bool = False
    latency: float = 0.0
    reject_credentials: bool = False
    drop_after_requests: int | None = None
