"""A small thread-safe TTL cache with per-key single flight.

A burst of identical requests that all miss computes the value once: the first
caller computes it while the others wait on that key's (striped) lock, then read
the fresh entry. ``ttl <= 0`` disables caching entirely.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")

_MISSING = object()


class TTLCache(Generic[V]):
    def __init__(self, ttl: float, max_entries: int = 2048, stripes: int = 64) -> None:
        self.ttl = float(ttl)
        self.max_entries = max_entries
        self._data: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(stripes)]
        self.hits = 0
        self.misses = 0

    def peek(self, key: Hashable) -> V | None:
        """The fresh value for ``key`` or None; never blocks on a computation."""
        if self.ttl <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            expires, value = item
            if expires <= now:
                del self._data[key]
                return None
            self.hits += 1
            return value

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        if self.ttl <= 0:
            self.misses += 1
            return compute()
        value = self.peek(key)
        if value is not None:
            return value
        with self._stripes[hash(key) % len(self._stripes)]:
            value = self.peek(key)  # computed by whoever held the lock before us
            if value is not None:
                return value
            self.misses += 1
            value = compute()
            with self._lock:
                self._data[key] = (time.monotonic() + self.ttl, value)
                self._data.move_to_end(key)
                while len(self._data) > self.max_entries:
                    self._data.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
