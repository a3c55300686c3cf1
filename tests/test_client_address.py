"""The client's address comes from trusted proxies only (issue 23, finding 5): the limit on
unknown API keys per client address cannot be lifted by writing X-Forwarded-For.

Locally the local host is the front end and appends the address the connection came from, as
Azure's front end does; without TRUSTED_PROXIES the rightmost entry is that address."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from shared.api import http
from shared.api.ratelimit import RateLimiter, client_address
from shared.settings import Limits
from tests.factories import PATH


class FrozenClock:
    def __call__(self) -> float:
        return 1000.0


@pytest.fixture
def limiter() -> Iterator[RateLimiter]:
    """The API's rate limiter with 3 unknown keys a minute per client, time standing still."""
    saved = http.rate_limiter
    http.rate_limiter = RateLimiter(Limits(failed_keys_per_minute=3), FrozenClock())
    yield http.rate_limiter
    http.rate_limiter = saved


async def test_rotating_x_forwarded_for_does_not_lift_the_unknown_key_limit(
    api_host: str, limiter: RateLimiter
) -> None:
    statuses = []
    async with aiohttp.ClientSession(api_host) as session:
        for n in range(8):
            headers = {
                "Authorization": f"sbd_{uuid.uuid4().hex}",
                "X-Forwarded-For": f"10.9.{n}.1",
                "Client-IP": f"10.8.{n}.1",  # the front end overwrites it, as Azure's does
            }
            async with session.get(PATH, headers=headers) as response:
                statuses.append(response.status)
    assert statuses == [401] * 3 + [429] * 5


@pytest.mark.parametrize(
    ("forwarded", "trusted", "peer", "client"),
    [
        ("203.0.113.9", (), None, "203.0.113.9"),
        ("1.1.1.1, 203.0.113.9", (), None, "203.0.113.9"),  # the client wrote the first
        ("1.1.1.1", (), "203.0.113.9:5231", "203.0.113.9"),  # the front end's Client-IP
        ("1.1.1.1, 198.51.100.7:5231, 10.0.0.4", ("10.0.0.0/8",), None, "198.51.100.7"),
        ("1.1.1.1, 198.51.100.7", ("10.0.0.0/8",), "10.0.0.4:443", "198.51.100.7"),
        ("1.1.1.1, 198.51.100.7, 10.0.0.4", ("10.0.0.0/8", "198.51.100.0/24"), None, "1.1.1.1"),
        ("2001:db8::5, [2001:db8::9]:443", ("2001:db8::9",), None, "2001:db8::5"),
        ("garbage, 10.0.0.4", ("10.0.0.0/8",), None, "garbage"),
        ("10.0.0.3, 10.0.0.4", ("10.0.0.0/8",), None, "10.0.0.3"),  # all trusted: the leftmost
        ("", (), None, ""),
    ],
)
def test_the_client_is_the_front_ends_peer_or_what_trusted_proxies_vouch_for(
    forwarded: str, trusted: tuple[str, ...], peer: str | None, client: str
) -> None:
    assert client_address(forwarded, trusted, peer) == client
