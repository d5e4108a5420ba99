"""A pair gets only the failure events that name its peer's address, not an address that starts with it."""
from __future__ import annotations

from ipsec_deploy.verify.classify import FAILING, PairResult
from ipsec_deploy.verify.expectations import PairProbe
from ipsec_deploy.verify.run import Verifier


class FakeConnection:
    def __init__(self, host, events):
        self.host, self.events = host, events

    def run_cmdlet(self, name, parameters):
        return self.events, []


def test_event_of_other_peer_attached():
    other_peer_event = {"Id": 4654, "Message": "IPsec quick mode negotiation failed.\nRemote Endpoint:\n\tNetwork Address: 10.0.1.10\nFailure Reason: No policy configured"}
    sessions = {"A": FakeConnection("A", []), "B": FakeConnection("B", [other_peer_event])}
    probe = PairProbe("p", "A", "B", "ra", "rb", "10.0.1.1", "10.0.1.2", "TCP", 445, False, None)
    result = PairResult(probe, FAILING, "no SA and the connection failed")
    Verifier(sessions, "g", "PersistentStore")._attach_events([result])
    print("events attached to the A(10.0.1.1)<->B pair:", result.events)
    assert result.events == []
