"""Request rates per API key and failed keys per client, as token buckets in this process.

Each Functions instance keeps its own buckets, so the rates are per instance: they stop a
tenant's burst from starving the others here, and the operator's gateway (API Management,
Front Door) sets the global ones. Memory is bounded: the least recently seen bucket goes
first, so a flood of random keys or addresses cannot fill it.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.settings import Limits

MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class Buckets:
    """Token buckets by name: `rate` per second up to `burst`; beyond `most` names the least
    recently seen is forgotten."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float], most: int = MAX_BUCKETS
    ) -> None:
        self._rate, self._burst, self._clock, self._most = rate, burst, clock, most
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, name: str) -> float:
        """0 when a request may go now; else the seconds until it may (nothing taken)."""
        now = self._clock()
        bucket = self._buckets.get(name) or _Bucket(float(self._burst), now)
        bucket.tokens, bucket.at = self._tokens(bucket, now), now
        self._buckets[name] = bucket
        self._buckets.move_to_end(name)
        while len(self._buckets) > self._most:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return self._wait(bucket.tokens)

    def waiting(self, name: str) -> float:
        """Like take, without taking: how long `name` must wait before its next try."""
        bucket = self._buckets.get(name)
        if bucket is None:
            return 0.0
        tokens = self._tokens(bucket, self._clock())
        return 0.0 if tokens >= 1 else self._wait(tokens)

    def _tokens(self, bucket: _Bucket, now: float) -> float:
        return min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)

    def _wait(self, tokens: float) -> float:
        return (1 - tokens) / self._rate if self._rate > 0 else 3600.0

    def __len__(self) -> int:
        return len(self._buckets)


class RateLimiter:
    """The limits of the API: all requests and sends per key, unknown keys per client, and
    verifications (a message sent on save) per account."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.requests = Buckets(limits.requests_per_second, limits.request_burst, clock)
        self.sends = Buckets(limits.sends_per_second, limits.send_burst, clock)
        self.failed_keys = Buckets(
            limits.failed_keys_per_minute / 60,
            limits.failed_keys_per_minute,
            clock,
            most=limits.failed_key_clients,
        )
        self.verifications = Buckets(
            limits.verifications_per_minute / 60, limits.verifications_per_minute, clock
        )

    def request(self, key: str, sends: bool) -> float:
        """Seconds the key must wait before this request (0: go now)."""
        wait = self.requests.take(key)
        if not wait and sends:
            wait = self.sends.take(key)
        return wait


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.cache
def proxy_networks(trusted: Sequence[str]) -> tuple[Network, ...]:
    """TRUSTED_PROXIES as networks (an address alone is a network of one)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def client_address(forwarded: str, trusted: Sequence[str] = (), peer: str | None = None) -> str:
    """Whom a request came from: `peer`, the address the platform's front end saw (its
    `Client-IP` header: App Service's front end sets it and overwrites any a client sends;
    the local host does the same), else the rightmost `X-Forwarded-For` entry. When that is
    a trusted proxy (TRUSTED_PROXIES), the entries it vouches for are read from the right,
    up to the first one no trusted proxy wrote. Entries a client wrote itself are never
    believed, so rotating them changes nothing."""
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    hops += [peer.strip()] if peer and peer.strip() else []
    networks = proxy_networks(tuple(trusted))
    for hop in reversed(hops):
        address = _address(hop)
        if not any(_within(address, network) for network in networks):
            return address
    return _address(hops[0]) if hops else ""


def _address(hop: str) -> str:
    """An entry without its port (`1.2.3.4:5678`, `[2001:db8::1]:443`)."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    return hop.rsplit(":", 1)[0] if hop.count(":") == 1 else hop


def _within(address: str, network: Network) -> bool:
    try:
        return ipaddress.ip_address(address) in network
    except ValueError:  # not an address: no proxy of ours wrote it
        return False
