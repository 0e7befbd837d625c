"""Who sent a request: the optional sender allowlist, without trusting forged headers.

``X-Forwarded-For`` is written by whoever sends the request, so it is believed only when
the connection comes from a configured trusted proxy, and then read from the right: the
first hop that is not one of our proxies is the sender.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from tokendist.core.settings import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str | None) -> IPAddress | None:
    try:
        return ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None


def _within(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in networks)


def sender(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]
) -> IPAddress | None:
    """The sender's address, or None when it cannot be told (then refuse)."""
    address = _address(peer)
    if address is None or not forwarded_for or not _within(address, trusted_proxies):
        return address
    for hop in reversed(forwarded_for.split(",")):
        address = _address(hop)
        if address is None or not _within(address, trusted_proxies):
            return address
    return address


def allowed(
    peer: str | None,
    forwarded_for: str | None,
    allowlist: Sequence[IPNetwork],
    trusted_proxies: Sequence[IPNetwork],
) -> bool:
    if not allowlist:
        return True
    address = sender(peer, forwarded_for, trusted_proxies)
    return address is not None and _within(address, allowlist)
