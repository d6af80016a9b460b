"""Full garbage collections that do not stop an ingress holding thousands of connections (Ray-free).

Each open WebSocket keeps ~300-400 objects the cyclic collector tracks (the
ASGI scope and socket, Serve's request, the session, its sampler, queue and
tasks). CPython's full collection walks every one of them: at 2,000
connections ~640,000 objects and up to 0.9-1.35 s with the event loop stopped,
every ~25 s while they are held and every 1.5-2 s while they open
(docs/bench/ingress_gc_pauses.txt, docs/benchmarks.md "The night round").

:class:`GcFreezer` times each full collection and, with ``freeze``, freezes
what survived it (``gc.freeze``): those objects are alive, the collector stops
walking them, and the next full collection walks only what came since.
Reference counting still frees a frozen object; what it cannot free is a frozen
object that later becomes part of an unreachable cycle (a closed connection's).
So the frozen objects are handed back to the collector (``gc.unfreeze``) once
more connections have closed than are open (and more than ``min_closed``):
what a freeze keeps from being freed is then bounded by about the cycles of as
many connections as are open, and the one full collection that follows walks
them all once (with what Serve froze at the replica's start, frozen again after it).
"""

from __future__ import annotations

import gc
import time
from typing import Any, Protocol


class Collector(Protocol):
    """The part of the ``gc`` module used here (a fake in unit tests). Not ``gc.get_freeze_count``:
    it walks every frozen object (26 ms for 900,000, holding the GIL)."""

    callbacks: list[Any]

    def freeze(self) -> None: ...

    def unfreeze(self) -> None: ...


class GcFreezer:
    def __init__(self, *, freeze: bool = True, min_closed: int = 100, collector: Collector = gc) -> None:
        self.freeze = freeze
        self.min_closed = min_closed
        self.freezes = 0
        self.unfreezes = 0
        self._gc = collector
        self._closed = 0  # connections closed since the last unfreeze
        self._frozen = False  # frozen since the last unfreeze
        self._started = 0.0  # time.perf_counter() when the full collection in progress began
        self._pauses_ms: list[float] = []  # full collections since the last take_pauses()
        self._gc.callbacks.append(self._collected)

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        """``gc.callbacks`` hook: runs around every collection, on the thread that triggered it."""
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        self._pauses_ms.append((time.perf_counter() - self._started) * 1000.0)
        if self.freeze:  # right after a full collection the younger generations are empty
            self._gc.freeze()
            self.freezes += 1
            self._frozen = True

    def take_pauses(self) -> list[float]:
        """How long each full collection since the last call took (ms)."""
        pauses, self._pauses_ms = self._pauses_ms, []
        return pauses

    def closed(self, open_connections: int) -> None:
        """A connection ended; ``open_connections``: how many are still open."""
        if not self.freeze:
            return  # what Serve froze at the replica's start stays frozen
        self._closed += 1
        if self._closed > max(open_connections, self.min_closed) and self._frozen:
            self._gc.unfreeze()  # the next full collection frees the closed connections' cycles
            self.unfreezes += 1
            self._closed, self._frozen = 0, False

    def stop(self) -> None:
        """Stop watching and freezing (the replica shuts down); what is frozen stays frozen."""
        if self._collected in self._gc.callbacks:
            self._gc.callbacks.remove(self._collected)
