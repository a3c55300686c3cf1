"""A black hole (local/blackhole.py) per test: accepts TCP and never answers.

def test_x(black_hole):
    cs = black_hole.connection_string      # a Service Bus connection string to it
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.blackhole import BlackHole


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()
