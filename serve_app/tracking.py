"""Text events of one stream: OCR lines tracked across frames, confirmed, reported (Ray-free).

The stream's sampler tells a :class:`TextTracker` what each frame's answer says, as
it is given (skips at once, reads later; stream time only moves past the newest
``ts``): :meth:`~TextTracker.read` (the model read it: its lines),
:meth:`~TextTracker.same` (a ``duplicate``: the lines last read are still in
view) or :meth:`~TextTracker.skipped` (content unknown, stream time went on).
Each returns the events it causes.

A line read is matched to a track by place, after the motion of the view
(the median displacement of lines that kept their exact text), and by text
similarity. A track's text changes only when ``confirm_reads`` consecutive
reads of it agree on a new text spanning ``min_span_s`` of stream time; until
then :meth:`~TextTracker.wants_read` asks for the first frame that can confirm
it to be read even if it looks unchanged. docs/events.md explains the rules and their defaults.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from serve_app.config import EventsConfig
from serve_app.protocol import Line, TextEvent

# A place match also weighs how different the texts are: (1 - similarity) counts as this
# many line heights of distance, so of two lines near a track the one with its text wins.
_TEXT_WEIGHT = 2.0
# A line is gone only once this many reads in a row looked and did not see it: one read can
# miss a line that is still there (a hand over it, a glare, a page mid-turn, the model).
_GONE_MISSES = 2

Bounds = tuple[float, float, float, float]  # x0, y0, x1, y1


def text_key(text: str) -> str:
    """What two reads must share to agree: the text without its spaces (OCR drops or adds them)."""
    return "".join(text.split())


def similarity(a: str, b: str) -> float:
    """1 - normalised Levenshtein distance: 1.0 for equal texts, 0.0 for nothing in common."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return 1.0 - previous[-1] / max(len(a), len(b))


def _bounds(box: list[list[int]]) -> Bounds:
    xs = [p[0] for p in box]
    ys = [p[1] for p in box]
    return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))


def _place_distance(a: Bounds, b: Bounds) -> float:
    """Vertical offset of the centres plus the horizontal gap between the boxes, in line heights."""
    height = max(a[3] - a[1], b[3] - b[1], 1.0)
    dy = abs((a[1] + a[3]) - (b[1] + b[3])) / 2
    gap_x = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    return (dy + gap_x) / height


def _moved(b: Bounds, dx: float, dy: float) -> Bounds:
    return b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy


_CLOCK_RESTART_S = 2.0  # a capture clock that goes back further than this restarted


@dataclass(frozen=True, slots=True)
class _Read:
    text: str
    key: str
    score: float
    box: list[list[int]]
    bounds: Bounds
    frame_id: int
    at: float  # stream time


@dataclass(frozen=True, slots=True)
class _Run:
    """Consecutive reads of a track that agree on one text (what confirmation needs of them)."""

    first: _Read
    latest: _Read
    count: int
    score_sum: float

    @classmethod
    def start(cls, read: _Read) -> _Run:
        return cls(read, read, 1, read.score)

    def then(self, read: _Read) -> _Run:
        """One more read: the run grows if it agrees, a new run starts if not."""
        if read.key != self.latest.key:
            return _Run.start(read)
        return _Run(self.first, read, self.count + 1, self.score_sum + read.score)


@dataclass(frozen=True, slots=True)
class Track:
    """A confirmed track as it stands (:meth:`TextTracker.tracks`)."""

    track_id: int
    text: str
    score: float
    box: list[list[int]]  # in the frame last read that showed it
    first_frame_id: int  # the first frame that showed this text
    last_frame_id: int  # the last frame that showed the line


class _Track:
    def __init__(self, read: _Read) -> None:
        self.track_id: int | None = None  # given when its first text is confirmed
        self.bounds = read.bounds
        self.run = _Run.start(read)
        self.confirmed: _Read | None = None
        self.confirmed_score = 0.0
        self.first_frame_id = read.frame_id
        self.last_seen = read.at
        self.last_frame_id = read.frame_id
        self.misses = 0  # reads since the last one that showed it

    @property
    def pending(self) -> bool:
        """A new text awaits agreement, or the line just went missing from a read (one more tells)."""
        if self.misses == 0:
            return self.confirmed is None or self.run.latest.key != self.confirmed.key
        return self.misses < _GONE_MISSES


class TextTracker:
    """Tracks and confirms the text lines of one stream; see the module docstring."""

    def __init__(self, config: EventsConfig | None = None) -> None:
        self.config = config or EventsConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._clock = 0.0  # stream time: the sum of the forward steps of ts
        self._last_ts: float | None = None
        self._last_read: list[_Track] = []  # the tracks the last read showed
        self._forced_left = self.config.max_forced_reads
        self._has_read = False  # a new tracker knows nothing yet: it wants one read

    # --- input --------------------------------------------------------------

    def read(
        self, frame_id: int, ts: float, lines: Sequence[Line], *, forced: bool = False
    ) -> list[TextEvent]:
        """The model read this frame (``forced``: because :meth:`wants_read` asked for it)."""
        now = self._advance(ts)
        captured = self._captured(ts)
        self._has_read = True
        waiting = [(t, t.run.first, t.run.count) for t in self._tracks if t.pending]
        reads = [
            _Read(line.text, key, line.score, line.box, _bounds(line.box), frame_id, captured)
            for line in lines
            if (key := text_key(line.text)) and line.score >= self.config.min_score
        ]
        events: list[TextEvent] = []
        matched = self._match(reads)
        self._last_read = []
        for track in self._tracks:
            read = matched.get(id(track))
            if read is None:
                track.misses += 1
                continue
            self._observe(track, read)
            events.extend(self._confirm(track))
        for read in reads:
            if all(r is not read for r in matched.values()):
                self._tracks.append(track := _Track(read))
                self._last_read.append(track)
                events.extend(self._confirm(track))
        if not forced:
            self._forced_left = self.config.max_forced_reads
        elif not any(not t.pending or (t.run.first is first and t.run.count > n) for t, first, n in waiting):
            self._forced_left -= 1  # no waiting track was settled or got one more agreeing read
        return events + self._expire(frame_id, now)

    def same(self, frame_id: int, ts: float) -> list[TextEvent]:
        """This frame shows what the frame last read showed (a ``duplicate`` answer)."""
        now = self._advance(ts)
        for track in self._last_read:
            track.last_seen = now
            track.last_frame_id = frame_id
        return self._expire(frame_id, now)

    def skipped(self, frame_id: int, ts: float) -> list[TextEvent]:
        """A frame whose content is unknown (``rate``, ``superseded``, ``overloaded``, an error)."""
        return self._expire(frame_id, self._advance(ts))

    # --- state --------------------------------------------------------------

    def wants_read(self, ts: float) -> bool:
        """Read the frame of ``ts`` even if it looks unchanged: nothing read yet; a confirmed line
        just went missing from a read (one more tells); or a new text awaits agreement and the frame
        was taken ``min_span_s`` or more after its first read. A read of an earlier frame could
        agree but not confirm: it would cost a read, and the confirmation one read more."""
        if self._forced_left <= 0:
            return False
        if not self._has_read:
            return True
        at = self._captured(ts)
        return any(t.pending and (t.misses > 0 or self._spans(t.run.first.at, at)) for t in self._tracks)

    def tracks(self) -> list[Track]:
        """The confirmed tracks, in the order they were first confirmed."""
        out = []
        for t in self._tracks:
            if t.confirmed is not None and t.track_id is not None:
                c = t.confirmed
                out.append(
                    Track(t.track_id, c.text, t.confirmed_score, c.box, t.first_frame_id, t.last_frame_id)
                )
        return sorted(out, key=lambda t: t.track_id)

    # --- internals ----------------------------------------------------------

    def _advance(self, ts: float) -> float:
        # Answers come out of frame order (skips at once, reads later): time advances only past the
        # newest ts seen. A clock that goes back further than a restart gap (a restarted camera)
        # starts again from there, without turning stream time back.
        if self._last_ts is None or ts < self._last_ts - _CLOCK_RESTART_S:
            self._last_ts = ts
        elif ts > self._last_ts:
            self._clock += ts - self._last_ts
            self._last_ts = ts
        return self._clock

    def _captured(self, ts: float) -> float:
        """When the frame of ``ts`` was captured, in stream time (a frame newer than any answered
        yet: when it will be). A read's answer comes after newer frames' skips moved the clock on:
        how far apart two reads were taken is what ``min_span_s`` bounds, not how far apart their
        answers came."""
        newest = ts if self._last_ts is None else self._last_ts
        return self._clock + (ts - newest)

    def _spans(self, first: float, last: float) -> bool:
        """Reads of frames captured at ``first`` and ``last`` are far enough apart to confirm a text."""
        return last - first >= self.config.min_span_s - 1e-9

    def _match(self, reads: list[_Read]) -> dict[int, _Read]:
        """Track (by ``id``) -> the read that continues it; one read per track at most."""
        dx, dy = self._view_shift(reads)
        for track in self._tracks:
            track.bounds = _moved(track.bounds, dx, dy)
        pairs: list[tuple[int, float, int, int]] = []  # (tier, cost, track index, read index)
        for ti, track in enumerate(self._tracks):
            key = track.run.latest.key
            for ri, read in enumerate(reads):
                distance = _place_distance(track.bounds, read.bounds)
                if read.key in (key, track.confirmed.key if track.confirmed else key):
                    if distance <= self.config.max_jump:
                        pairs.append((0, distance, ti, ri))  # its own text: followed first
                elif distance <= self.config.place_tolerance:
                    text_cost = 1.0 - max(
                        similarity(read.key, key),
                        similarity(read.key, track.confirmed.key) if track.confirmed else 0.0,
                    )
                    pairs.append((1, distance + _TEXT_WEIGHT * text_cost, ti, ri))
        matched: dict[int, _Read] = {}
        used: set[int] = set()
        for _, _, ti, ri in sorted(pairs):
            track = self._tracks[ti]
            if id(track) not in matched and ri not in used:
                matched[id(track)] = reads[ri]
                used.add(ri)
        return matched

    def _view_shift(self, reads: list[_Read]) -> tuple[float, float]:
        """Median displacement of the lines whose exact text is one track's and one read's only."""
        by_key: dict[str, list[_Track]] = {}
        for track in self._tracks:
            by_key.setdefault(track.run.latest.key, []).append(track)
        read_keys = Counter(r.key for r in reads)
        moves = []
        for read in reads:
            tracks = by_key.get(read.key, [])
            if len(tracks) == 1 and read_keys[read.key] == 1:
                a, b = tracks[0].bounds, read.bounds
                if _place_distance(a, b) <= self.config.max_jump:
                    moves.append(((b[0] + b[2] - a[0] - a[2]) / 2, (b[1] + b[3] - a[1] - a[3]) / 2))
        if not moves:
            return 0.0, 0.0
        return statistics.median(m[0] for m in moves), statistics.median(m[1] for m in moves)

    def _observe(self, track: _Track, read: _Read) -> None:
        track.bounds = read.bounds
        track.last_seen = read.at
        track.last_frame_id = read.frame_id
        track.misses = 0
        track.run = track.run.then(read)
        if track.confirmed is not None and read.key == track.confirmed.key:
            track.confirmed = read  # the confirmed text, in its latest box
        self._last_read.append(track)

    def _confirm(self, track: _Track) -> list[TextEvent]:
        run = track.run
        latest = run.latest
        if track.confirmed is not None and latest.key == track.confirmed.key:
            return []
        if run.count < self.config.confirm_reads or not self._spans(run.first.at, latest.at):
            return []
        previous = track.confirmed
        score = run.score_sum / run.count
        track.confirmed, track.confirmed_score, track.first_frame_id = latest, score, run.first.frame_id
        if track.track_id is None:
            track.track_id, self._next_id = self._next_id, self._next_id + 1
        return [
            TextEvent(
                event="appeared" if previous is None else "changed",
                track_id=track.track_id,
                text=latest.text,
                previous=previous.text if previous is not None else None,
                score=round(score, 4),
                box=latest.box,
                frame_id=latest.frame_id,
                first_frame_id=run.first.frame_id,
            )
        ]

    def _expire(self, frame_id: int, now: float) -> list[TextEvent]:
        events = []
        kept = []
        for track in self._tracks:
            # Gone needs reads that looked and did not see it: frames nobody read (a slow read of a
            # page turn, an overloaded stream) age a track but cannot tell that it left.
            if track.misses < _GONE_MISSES or now - track.last_seen < self.config.gone_after_s - 1e-9:
                kept.append(track)
            elif track.confirmed is not None and track.track_id is not None:
                events.append(
                    TextEvent(
                        event="gone",
                        track_id=track.track_id,
                        text=track.confirmed.text,
                        frame_id=frame_id,
                        last_frame_id=track.last_frame_id,
                    )
                )
        if len(kept) < len(self._tracks):
            alive = {id(t) for t in kept}
            self._tracks = kept
            self._last_read = [t for t in self._last_read if id(t) in alive]
        return events
