"""GcFreezer: survivors of a full collection are frozen; closed connections' cycles are freed later."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from serve_app.gc_freeze import GcFreezer


class Connection:
    """A closed connection's leftovers: a reference cycle only the cyclic collector frees."""

    def __init__(self) -> None:
        self.me = self
        self.state = [{"frame": i} for i in range(10)]


class Plain:
    """No cycle: reference counting frees it."""


class FakeCollector:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.frozen = 0

    def collect(self, generation: int) -> None:
        for callback in list(self.callbacks):
            callback("start", {"generation": generation})
        for callback in list(self.callbacks):
            callback("stop", {"generation": generation, "collected": 0, "uncollectable": 0})

    def freeze(self) -> None:
        self.frozen += 1000

    def unfreeze(self) -> None:
        self.frozen = 0


@pytest.fixture
def real_gc() -> Iterator[None]:
    gc.collect()
    yield
    gc.unfreeze()
    gc.collect()


def test_only_full_collections_freeze() -> None:
    collector = FakeCollector()
    freezer = GcFreezer(collector=collector)
    collector.collect(0)
    collector.collect(1)
    assert collector.frozen == 0
    collector.collect(2)
    assert collector.frozen == 1000 and freezer.freezes == 1


def test_unfreezes_once_more_connections_closed_than_are_open() -> None:
    collector = FakeCollector()
    freezer = GcFreezer(min_closed=3, collector=collector)
    collector.collect(2)
    for open_now in (9, 8, 7, 6, 5):  # 5 closed, 5 still open
        freezer.closed(open_now)
    assert collector.frozen == 1000 and freezer.unfreezes == 0
    freezer.closed(4)  # 6 closed > 4 open
    assert collector.frozen == 0 and freezer.unfreezes == 1
    collector.collect(2)
    for _ in range(3):  # the count starts again, and needs more than min_closed even with none open
        freezer.closed(0)
    assert collector.frozen == 1000
    freezer.closed(0)
    assert collector.frozen == 0 and freezer.unfreezes == 2


def test_nothing_frozen_nothing_to_unfreeze() -> None:
    collector = FakeCollector()
    freezer = GcFreezer(min_closed=1, collector=collector)
    for _ in range(5):
        freezer.closed(0)
    assert freezer.unfreezes == 0


def test_full_collections_are_timed_whether_or_not_frozen() -> None:
    collector = FakeCollector()
    freezer = GcFreezer(freeze=False, collector=collector)
    collector.collect(1)
    collector.collect(2)
    collector.collect(2)
    pauses = freezer.take_pauses()
    assert len(pauses) == 2 and all(p >= 0.0 for p in pauses)
    assert freezer.take_pauses() == []
    assert collector.frozen == 0 and freezer.freezes == 0


def test_without_freezing_what_serve_froze_stays_frozen() -> None:
    collector = FakeCollector()
    collector.frozen = 5000  # Serve freezes a replica's start-up objects
    freezer = GcFreezer(freeze=False, min_closed=1, collector=collector)
    for _ in range(10):
        freezer.closed(0)
    assert collector.frozen == 5000 and freezer.unfreezes == 0


def test_stop_stops_freezing() -> None:
    collector = FakeCollector()
    freezer = GcFreezer(collector=collector)
    freezer.stop()
    collector.collect(2)
    assert collector.frozen == 0 and collector.callbacks == []


def test_with_the_real_collector(real_gc: None) -> None:
    freezer = GcFreezer(min_closed=2)
    try:
        connections = [Connection() for _ in range(3)]
        plain = Plain()
        gone = [weakref.ref(c) for c in connections]
        plain_gone = weakref.ref(plain)
        before = gc.get_freeze_count()
        gc.collect()  # a full collection: its survivors (these among them) are frozen
        assert freezer.freezes == 1 and gc.get_freeze_count() > before
        assert not any(obj is connections[0] for obj in gc.get_objects())  # no longer walked

        del plain
        assert plain_gone() is None  # frozen, and still freed by reference counting

        del connections
        gc.collect()
        assert all(ref() is not None for ref in gone)  # frozen cycles wait for the unfreeze
        for open_now in (2, 1, 0):
            freezer.closed(open_now)
        assert freezer.unfreezes == 1
        gc.collect()
        assert all(ref() is None for ref in gone)
    finally:
        freezer.stop()
