"""Overlap tests for rule traffic selectors: addresses, protocols and ports."""

from __future__ import annotations

import ipaddress

from ..objects import ANY_ADDRESS


def parse_address(text: str):
    return ipaddress.ip_network(text, strict=False)


def addresses_overlap(first: tuple[str, ...], second: tuple[str, ...]) -> bool:
    """Return whether two address lists share an address; an empty list or "Any" is every address."""
    if not first or not second or ANY_ADDRESS in first or ANY_ADDRESS in second:
        return True
    for a in first:
        network_a = parse_address(a)
        for b in second:
            network_b = parse_address(b)
            if network_a.version == network_b.version and network_a.overlaps(network_b):
                return True
    return False


def address_covered(address, addresses: tuple[str, ...]) -> bool:
    """Return whether one IP address is inside an address list ("Any" when empty)."""
    if not addresses or ANY_ADDRESS in addresses:
        return True
    return any(address in parse_address(text) for text in addresses if parse_address(text).version == address.version)


_PROTOCOL_NUMBERS = {"TCP": "6", "UDP": "17", "ICMPV4": "1", "ICMPV6": "58"}


def protocols_overlap(first: str, second: str) -> bool:
    if first == "Any" or second == "Any":
        return True
    return _PROTOCOL_NUMBERS.get(first.upper(), first) == _PROTOCOL_NUMBERS.get(second.upper(), second)


def _port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def ports_overlap(first: tuple[str, ...], second: tuple[str, ...]) -> bool:
    """Return whether two port lists share a port; an empty list is every port."""
    if not first or not second:
        return True
    for a in first:
        low_a, high_a = _port_range(a)
        for b in second:
            low_b, high_b = _port_range(b)
            if low_a <= high_b and low_b <= high_a:
                return True
    return False
