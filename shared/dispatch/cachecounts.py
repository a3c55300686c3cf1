"""What a bounded cache tells the stats line (issue 25): its size against its bound, and how
often a lookup found what it wanted. A falling hit rate with the size at the bound says the
bound is below what one instance serves."""

from __future__ import annotations


class CacheCounts:
    """Hits and misses since the last `take`, and the cache's bound."""

    __slots__ = ("capacity", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0

    def hit(self) -> None:
        self.hits += 1

    def miss(self) -> None:
        self.misses += 1

    def take(self, size: int) -> dict[str, int]:
        """The stats line's fields, with the counts since the last call; resets the counts."""
        counted = {"size": size, "capacity": self.capacity, "hits": self.hits}
        counted["misses"] = self.misses
        self.hits = self.misses = 0
        return counted
