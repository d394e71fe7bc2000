"""The client's address for rate limits: the peer, or the first untrusted hop behind trusted proxies."""

from __future__ import annotations

import ipaddress

from falcon.asgi import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(req: Request, trusted: list[Network]) -> str:
    """Walk X-Forwarded-For from the right, past the proxies we run, to the first hop we don't.

    Only hops appended by trusted proxies are believed: anything to the left of the first
    untrusted hop was written by the client and may be forged.
    """
    peer = req.remote_addr
    if not trusted:
        return peer
    forwarded = [hop.strip() for hop in (req.get_header("X-Forwarded-For") or "").split(",") if hop.strip()]
    chain = [*forwarded, peer]
    for hop in reversed(chain):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return hop  # not an address: whoever wrote it is the client
        if not any(address in network for network in trusted):
            return hop
    return chain[0]
