"""The text tracker: confirmation, hysteresis, tracking by place, gone, forced reads (Ray-free)."""

from __future__ import annotations

from serve_app.config import EventsConfig
from serve_app.protocol import Line, TextEvent
from serve_app.tracking import TextTracker, similarity

STEP = 6  # frames between reads: a 30 fps stream read at the default 5 fps


def line(text: str, x: int = 100, y: int = 100, score: float = 0.95) -> Line:
    width = 14 * len(text)
    return Line(text=text, score=score, box=[[x, y], [x + width, y], [x + width, y + 30], [x, y + 30]])


class Stream:
    """Feeds a tracker reads of a 30 fps stream, one every STEP frames; collects the events."""

    def __init__(self, config: EventsConfig | None = None) -> None:
        self.tracker = TextTracker(config)
        self.frame = 0
        self.events: list[TextEvent] = []

    def read(self, *lines: Line, forced: bool = False) -> list[TextEvent]:
        return self._add(self.tracker.read(self.frame, self.frame / 30, list(lines), forced=forced))

    def same(self) -> list[TextEvent]:
        return self._add(self.tracker.same(self.frame, self.frame / 30))

    def skipped(self) -> list[TextEvent]:
        return self._add(self.tracker.skipped(self.frame, self.frame / 30))

    def wants_read(self) -> bool:
        """Does the tracker ask for the next frame (the next one fed) to be read?"""
        return self.tracker.wants_read(self.frame / 30)

    def _add(self, events: list[TextEvent]) -> list[TextEvent]:
        self.frame += STEP
        self.events.extend(events)
        return events

    def texts(self) -> list[tuple[str, str]]:
        return [(e.event, e.text) for e in self.events]


def test_a_new_line_is_announced_only_once_a_second_read_agrees() -> None:
    s = Stream()
    assert s.read(line("SN-48213")) == []
    [event] = s.read(line("SN-48213"))
    assert (event.event, event.text, event.previous) == ("appeared", "SN-48213", None)
    assert (event.frame_id, event.first_frame_id) == (STEP, 0)
    assert event.box == line("SN-48213").box and event.score == 0.95


def test_a_single_misread_makes_no_event() -> None:
    s = Stream()
    s.read(line("SN-48213"))
    s.read(line("SN-48213"))
    for text in ("SN-48218", "SN-48213", "SN-48213"):
        s.read(line(text))
    assert s.texts() == [("appeared", "SN-48213")]


def test_a_briefly_hidden_character_makes_no_event() -> None:
    s = Stream()
    s.read(line("PRICE 12.49"))
    s.read(line("PRICE 12.49"))
    s.read(line("PRICE 1.49"))
    s.read(line("PRICE 12.49"))
    assert s.texts() == [("appeared", "PRICE 12.49")]


def test_alternating_misreads_never_flicker() -> None:
    s = Stream()
    for _ in range(5):
        s.read(line("A-1006"))
        s.read(line("A-1008"))
    assert s.texts() == []


def test_two_reads_within_min_span_do_not_confirm() -> None:
    s = Stream(EventsConfig(min_span_s=0.5))  # reads are 0.2 s apart: 3 reads span 0.4 s
    assert [s.read(line("7731")) for _ in range(3)] == [[], [], []]
    assert s.read(line("7731"))[0].event == "appeared"


def test_the_span_of_agreeing_reads_is_when_their_frames_were_taken_not_answered() -> None:
    """Skips are answered at once, reads later: by the time a read's answer comes, newer frames
    moved stream time on. Two reads of a 4-frame disturbance, taken 2 frames apart, do not confirm
    however far apart their answers come; a third, taken 8 frames after the first, does."""
    tracker = TextTracker(EventsConfig())  # min_span_s 0.15: 4.5 frames at 30 fps

    def read(frame: int, skipped_to: int) -> list[TextEvent]:
        for later in range(frame + 1, skipped_to + 1):
            tracker.skipped(later, later / 30)
        return tracker.read(frame, frame / 30, [line("LOT 4821")], forced=frame > 100)

    assert read(100, 104) == [] and read(102, 110) == []
    assert [e.event for e in read(108, 115)] == ["appeared"]


def test_a_confirmed_change_reports_the_previous_text() -> None:
    s = Stream()
    s.read(line("SN-48213"))
    s.read(line("SN-48213"))
    s.read(line("SN-48214"))
    [event] = s.read(line("SN-48214"))
    assert (event.event, event.text, event.previous, event.track_id) == ("changed", "SN-48214", "SN-48213", 1)
    assert event.first_frame_id == 2 * STEP


def test_a_completely_different_text_at_the_same_place_is_a_change() -> None:
    s = Stream()
    for text in ("1234", "1234", "5678", "5678"):
        s.read(line(text))
    assert s.texts() == [("appeared", "1234"), ("changed", "5678")]


def test_gone_after_the_configured_stream_time_with_the_last_frame_that_showed_it() -> None:
    s = Stream(EventsConfig(gone_after_s=1.0))
    s.read(line("EXIT 4"))
    s.read(line("EXIT 4"))
    last = s.frame - STEP
    gone = [s.read() for _ in range(5)]  # 5 reads without it: 0.2 .. 1.0 s after it was last seen
    assert gone[:4] == [[], [], [], []]
    [event] = gone[4]
    assert (event.event, event.text) == ("gone", "EXIT 4")
    assert (event.last_frame_id, event.frame_id) == (last, last + 30)


def test_gone_counts_stream_time_on_skipped_frames_too() -> None:
    s = Stream(EventsConfig(gone_after_s=1.0))
    s.read(line("EXIT 4"))
    s.read(line("EXIT 4"))
    s.read()
    s.read()  # two reads without it: it left (one could have missed it)
    assert [e.event for _ in range(4) for e in s.skipped()] == ["gone"]


def test_no_gone_while_no_read_has_looked() -> None:
    s = Stream(EventsConfig(gone_after_s=1.0))
    s.read(line("EXIT 4"))
    s.read(line("EXIT 4"))
    for _ in range(20):  # 4 s of frames nobody read (a slow read in flight, an overloaded stream)
        s.skipped()
    assert s.texts() == [("appeared", "EXIT 4")]
    s.read()  # a read looks and does not see it: one more read tells
    assert s.texts() == [("appeared", "EXIT 4")] and s.wants_read()
    s.read()  # the second: gone at once, 4 s after it was last seen
    assert s.texts() == [("appeared", "EXIT 4"), ("gone", "EXIT 4")]


def test_a_line_missing_from_one_read_and_back_in_the_next_is_not_gone() -> None:
    """A page turned back, a hand over a label: one read without the line is not its end."""
    s = Stream(EventsConfig(gone_after_s=1.0))
    s.read(line("EXIT 4"))
    s.read(line("EXIT 4"))
    s.read(line("EXIT 4", x=400, y=300))  # mid-turn: the line is elsewhere, misread as another line
    for _ in range(6):  # 1.2 s until the next read (a slow model)
        s.skipped()
    s.read(line("EXIT 4"))
    assert s.texts() == [("appeared", "EXIT 4")]


def test_same_keeps_a_track_alive() -> None:
    s = Stream(EventsConfig(gone_after_s=1.0))
    s.read(line("EXIT 4"))
    s.read(line("EXIT 4"))
    for _ in range(20):  # 4 s of frames judged the same as the last read
        s.same()
    assert s.texts() == [("appeared", "EXIT 4")]


def test_a_shift_of_the_view_keeps_the_tracks() -> None:
    s = Stream()
    s.read(line("LOT 94762", y=100), line("SN-48213", y=140))
    s.read(line("LOT 94762", y=100), line("SN-48213", y=140))
    # the camera moved 50 px right and 35 px down (more than a line height); one line misread
    s.read(line("LOT 94762", x=150, y=135), line("SN-48218", x=150, y=175))
    s.read(line("LOT 94762", x=150, y=135), line("SN-48213", x=150, y=175))
    assert s.texts() == [("appeared", "LOT 94762"), ("appeared", "SN-48213")]
    assert [(t.track_id, t.box[0]) for t in s.tracker.tracks()] == [(1, [150, 135]), (2, [150, 175])]


def test_an_object_moving_several_pixels_per_read_keeps_its_track_through_a_change() -> None:
    s = Stream()
    texts = ["SN-48213"] * 3 + ["SN-48214"] * 3
    for i, text in enumerate(texts):
        s.read(line("STATION 3", x=20, y=20), line(text, x=100 + 12 * i, y=200 + 3 * i))
    assert s.texts() == [("appeared", "STATION 3"), ("appeared", "SN-48213"), ("changed", "SN-48214")]
    assert {e.track_id for e in s.events if e.text.startswith("SN")} == {2}


def test_two_lines_swapping_places_keep_their_texts() -> None:
    s = Stream()
    s.read(line("RED", y=100), line("BLUE", y=140))
    s.read(line("RED", y=100), line("BLUE", y=140))
    ids = {t.text: t.track_id for t in s.tracker.tracks()}
    s.read(line("RED", y=140), line("BLUE", y=100))
    s.read(line("RED", y=140), line("BLUE", y=100))
    assert s.texts() == [("appeared", "RED"), ("appeared", "BLUE")]
    assert {t.text: (t.track_id, t.box[0][1]) for t in s.tracker.tracks()} == {
        "RED": (ids["RED"], 140),
        "BLUE": (ids["BLUE"], 100),
    }


def test_two_lines_change_independently() -> None:
    s = Stream()
    s.read(line("TOTAL EUR", y=50), line("12.49", y=100))
    s.read(line("TOTAL EUR", y=50), line("12.49", y=100))
    s.read(line("TOTAL EUR", y=50), line("13.99", y=100))
    s.read(line("TOTAL EUR", y=50), line("13.99", y=100))
    assert s.texts() == [("appeared", "TOTAL EUR"), ("appeared", "12.49"), ("changed", "13.99")]


def test_empty_and_low_score_lines_are_ignored() -> None:
    s = Stream(EventsConfig(min_score=0.5))
    for _ in range(3):
        s.read(line("  ", y=50), line("GLARE", y=100, score=0.3))
    assert s.texts() == []


def test_spaces_dropped_by_the_reader_are_no_change() -> None:
    s = Stream()
    for text in ("LOT 94762", "LOT 94762", "LOT94762", "LOT94762"):
        s.read(line(text))
    assert s.texts() == [("appeared", "LOT 94762")]


def test_a_new_tracker_wants_one_read_of_a_still_scene() -> None:
    # events turned on, or a reconnect, while the sampler answers the unchanged view `duplicate`
    s = Stream()
    assert s.wants_read()
    s.read(forced=True)  # nothing in view
    assert not s.wants_read()


def test_wants_read_only_while_a_text_is_pending() -> None:
    s = Stream()
    s.read()
    assert not s.wants_read()
    s.read(line("SN-48213"))
    assert s.wants_read()
    s.read(line("SN-48213"), forced=True)
    assert not s.wants_read()
    s.same()
    assert not s.wants_read()


def test_wants_read_after_a_confirmed_line_goes_missing_once() -> None:
    s = Stream()
    s.read(line("SN-48213"))
    s.read(line("SN-48213"), forced=True)
    s.read()  # dropped by the reader, or really gone: one more read tells
    assert s.wants_read()
    s.read(forced=True)
    assert not s.wants_read()


def test_wants_read_gives_up_after_max_forced_reads_without_agreement() -> None:
    s = Stream(EventsConfig(max_forced_reads=2))
    s.read(line("SN-48213"))
    s.read(line("SN-48219"), forced=True)
    assert s.wants_read()
    s.read(line("SN-48218"), forced=True)
    assert not s.wants_read()
    s.read(line("SN-48217"))  # content changed: asking again is allowed
    assert s.wants_read()


def test_a_confirmation_read_is_asked_for_only_of_a_frame_that_can_confirm() -> None:
    """With fast reads (a frame each), a frame under min_span_s after a new text's first read could
    agree but not confirm: the tracker asks for the first frame min_span_s on, and that read confirms."""
    tracker = TextTracker(EventsConfig(max_forced_reads=1, min_span_s=0.15))
    events = tracker.read(0, 0.0, [line("7731")])
    asked = []
    for frame in range(1, 10):
        ts = frame / 30
        if tracker.wants_read(ts):
            asked.append(frame)
            events += tracker.read(frame, ts, [line("7731")], forced=True)
        else:
            events += tracker.same(frame, ts)
    assert asked == [5]
    assert [(e.event, e.frame_id) for e in events] == [("appeared", 5)]


def test_similarity_is_one_minus_normalised_edit_distance() -> None:
    assert similarity("SN-48213", "SN-48213") == 1.0
    assert similarity("SN-48213", "SN-48214") == 1 - 1 / 8
    assert similarity("1234", "") == 0.0
