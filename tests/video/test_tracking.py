"""Tracking detections of successive frames into objects, and their thumbnails."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
from PIL import Image

from video.tracking import FrameBox, Tracker, TrackingSettings

T0 = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)
W, H = 1280, 720


def at(second: float) -> datetime:
    return T0 + timedelta(seconds=second)


def frame(shade: int = 40) -> np.ndarray:
    return np.full((H, W, 3), shade, dtype=np.uint8)


def person(x: float, y: float = 300, score: float = 0.8, w: float = 40, h: float = 100) -> FrameBox:
    return FrameBox("person", score, (x, y, x + w, y + h))


def test_a_walking_person_is_one_object_from_first_to_last_sighting():
    tracker = Tracker()
    ended = []
    for second in range(3, 13):  # 60 px a second: more than their width, no overlap between frames
        score = 0.9 if second == 7 else 0.7
        ended += tracker.update(at(second), [person(100 + 60 * second, score=score)], frame(second))
    for second in range(13, 30):
        ended += tracker.update(at(second), [], None)
    assert len(ended) == 1 and not tracker.active
    walker = ended[0]
    assert (walker.label, walker.start, walker.end, walker.frames) == ("person", at(3), at(12), 10)
    assert (walker.best_score, walker.best_time) == (0.9, at(7))
    assert walker.best_box == (520, 300, 560, 400)


def test_two_people_crossing_stay_two():
    tracker = Tracker()
    for second in range(12):
        boxes = [person(200 + 50 * second, score=0.8), person(750 - 50 * second, y=310, score=0.6)]
        tracker.update(at(second), boxes, frame())
    objects = tracker.finish()
    assert len(objects) == 2 and [o.frames for o in objects] == [12, 12]
    went_left, went_right = sorted(objects, key=lambda o: o.last_box[0])
    # each kept its own walk through the crossing: its own score, from its own side to the other
    assert (went_right.best_score, went_right.last_box[0]) == (0.8, 750)
    assert (went_left.best_score, went_left.last_box[0]) == (0.6, 200)


def test_a_fast_car_seen_in_three_frames_is_one_object():
    """A 60 x 150 px car at 50 km/h moves about three of its lengths between samples a second apart."""
    tracker = Tracker()
    for second in range(3):
        x = 100 + 450 * second
        tracker.update(at(second), [FrameBox("car", 0.6, (x, 400, x + 150, 460))], frame())
    [car] = tracker.finish()
    assert (car.start, car.end, car.frames) == (at(0), at(2), 3)
    strict = Tracker(TrackingSettings(max_distance_first=1.5))
    for second in range(3):
        x = 100 + 450 * second
        strict.update(at(second), [FrameBox("car", 0.6, (x, 400, x + 150, 460))], frame())
    assert strict.finish() == []  # each sighting a new object of one frame: none counted


def test_labels_are_tracked_apart():
    tracker = Tracker()
    for second in range(3):
        tracker.update(at(second), [person(100), FrameBox("car", 0.8, (100, 300, 140, 400))], frame())
    assert sorted(o.label for o in tracker.finish()) == ["car", "person"]


def test_a_vehicle_called_car_then_truck_is_one_object_named_by_its_best_detection():
    tracker = Tracker()
    for second, (label, score) in enumerate([("car", 0.5), ("truck", 0.7), ("bus", 0.45), ("car", 0.6)]):
        tracker.update(
            at(second), [FrameBox(label, score, (100 + 30 * second, 300, 260 + 30 * second, 380))], frame()
        )
    [pickup] = tracker.finish()
    assert (pickup.label, pickup.frames, pickup.best_score) == ("truck", 4, 0.7)
    apart = Tracker(TrackingSettings(same_kind=()))
    for second, label in enumerate(["car", "truck", "car", "truck"]):
        apart.update(
            at(second), [FrameBox(label, 0.6, (100 + 30 * second, 300, 260 + 30 * second, 380))], frame()
        )
    assert sorted(o.label for o in apart.finish()) == ["car", "truck"]


def test_a_lone_detection_is_no_object_and_a_long_gap_ends_one():
    tracker = Tracker(TrackingSettings(min_frames=2, lost_after_s=5))
    tracker.update(at(0), [person(100)], frame())
    assert tracker.update(at(6), [], None) == []  # seen once: not counted
    tracker.update(at(10), [person(500)], frame())
    tracker.update(at(11), [person(510)], frame())
    tracker.update(at(15), [person(520)], frame())  # 4 s unseen: the same object
    ended = tracker.update(at(21), [person(530)], frame())  # 6 s unseen: a new one
    assert [(o.start, o.end, o.frames) for o in ended] == [(at(10), at(15), 3)]
    assert [(o.start, o.frames) for o in tracker.active] == [(at(21), 1)]


def test_a_stopped_object_seen_only_by_the_periodic_look_stays_one():
    tracker = Tracker(TrackingSettings(lost_after_s=12))
    for second in range(0, 4):
        tracker.update(at(second), [person(100 + 50 * second)], frame())
    assert tracker.look_at(at(4), W, H).look == [(250, 300, 340, 400)]  # where it was, to 50 px on
    tracker.update(at(4), [person(250)], frame())  # stopped
    assert tracker.look_at(at(5), W, H).look == []
    assert tracker.look_at(at(5), W, H, moving_only=False).look == [(250, 300, 290, 400)]
    for second in range(5, 40):
        seen = [person(250)] if second % 5 == 0 else []  # only the look every 5 s sees it
        assert tracker.update(at(second), seen, frame() if seen else None) == []
    (parked,) = tracker.finish()
    assert (parked.start, parked.end) == (at(0), at(35))


def test_an_object_that_left_the_frame_is_not_looked_for_and_who_enters_there_is_another():
    tracker = Tracker(TrackingSettings(lost_after_s=12))
    for second in range(0, 4):
        tracker.update(at(second), [person(1100 + 50 * second)], frame())  # last at 1250-1290
    assert tracker.look_at(at(4), W, H).look == []  # expected at 1300-1340: out of the frame
    assert tracker.look_at(at(5), W, H, moving_only=False).look == []
    for second in (5, 6):  # someone walks in there: where the first is now is not known
        tracker.update(at(second), [person(1240 - 50 * (second - 5))], frame())
    objects = sorted(tracker.finish(), key=lambda o: o.start)
    assert [(o.start, o.end, o.frames) for o in objects] == [(at(0), at(3), 4), (at(5), at(6), 2)]


def test_an_object_followed_surely_is_looked_at_every_other_frame():
    tracker = Tracker(TrackingSettings(lost_after_s=12))
    looked = []
    for second in range(0, 10):
        looks = tracker.look_at(at(second), W, H, every_s=2.0)
        if looks.look:
            looked.append(second)
        elif tracker.active:  # skipped: where it is expected now, where motion needs no look either
            assert looks.followed == [(100 + 50 * second, 300, 140 + 50 * second, 400)], second
        if second < 2 or looks.look:  # the first two sightings come from motion, then the looks'
            tracker.update(at(second), [person(100 + 50 * second)], frame())
    assert looked == [1, 2, 4, 6, 8]  # seen twice, its velocity known, then every 2 s
    assert [(o.start, o.end) for o in tracker.finish()] == [(at(0), at(8))]


def test_an_object_missed_by_its_look_is_looked_at_every_frame_again():
    tracker = Tracker(TrackingSettings(lost_after_s=12))
    for second in range(0, 3):
        tracker.look_at(at(second), W, H, every_s=2.0)
        tracker.update(at(second), [person(100 + 50 * second)], frame())
    assert tracker.look_at(at(3), W, H, every_s=2.0).look == []  # followed: skipped
    tracker.update(at(3), [], None)
    assert tracker.look_at(at(4), W, H, every_s=2.0).look  # looked at
    assert tracker.look_at(at(5), W, H, every_s=2.0).look == []  # the look's answer not in yet
    tracker.update(at(4), [], None)  # the look at 4 s did not find it
    assert tracker.look_at(at(5), W, H, every_s=2.0).look  # known now: looked at at once
    tracker.update(at(5), [], None)
    assert tracker.look_at(at(6), W, H, every_s=2.0).look  # and every frame until seen


def test_a_lone_detection_is_dropped_after_a_few_seconds_a_counted_object_kept():
    tracker = Tracker(TrackingSettings(lost_after_s=12, tentative_lost_after_s=3))
    tracker.update(at(0), [FrameBox("car", 0.6, (700, 300, 714, 315)), person(100)], frame())
    tracker.update(at(1), [person(150)], frame())
    tracker.update(at(2), [], None)
    assert sorted(t.label for t in tracker.active) == ["car", "person"]
    tracker.update(at(3), [], None)
    assert [t.label for t in tracker.active] == ["person"]  # the car, seen once 3 s ago, is gone
    tracker.update(at(12), [], None)
    assert [t.label for t in tracker.active] == ["person"]  # seen twice: kept for lost_after_s


def test_weak_boxes_only_follow_an_object_where_it_is():
    tracker = Tracker(TrackingSettings(lost_after_s=12), start_score=0.4)
    tracker.update(at(0), [person(400, score=0.3)], frame())
    tracker.update(at(1), [person(410, score=0.3)], frame())
    assert tracker.active == [] and tracker.used == []  # weak boxes start nothing
    for second in range(2, 5):  # walks in, confidently seen, stops at 440
        tracker.update(at(second), [person(400 + 20 * (second - 2), score=0.7)], frame())
    for second in range(5, 30):  # stands still, small: 0.3 now and then, never 0.4
        seen = [person(440, score=0.3)] if second % 8 == 0 else []
        assert tracker.update(at(second), seen, frame() if seen else None) == []
        assert tracker.used == seen
    tracker.update(at(30), [person(460, score=0.6)], frame())  # walks on
    tracker.update(at(31), [person(700, score=0.3)], frame())  # a weak box far off joins nothing
    assert tracker.used == []
    (visit,) = tracker.finish()
    assert (visit.start, visit.end, visit.frames, visit.confident_frames) == (at(2), at(30), 7, 4)
    assert visit.best_score == 0.7


def test_an_object_seen_confidently_once_then_weakly_is_not_counted():
    tracker = Tracker(TrackingSettings(min_frames=2), start_score=0.4)
    tracker.update(at(0), [person(400, score=0.5)], frame())
    for second in range(1, 6):
        tracker.update(at(second), [person(400, score=0.3)], frame())
    assert tracker.finish() == []


def test_a_person_who_stops_while_unseen_is_still_one_visit():
    tracker = Tracker(TrackingSettings(lost_after_s=12))
    for second in range(0, 4):  # walks at 50 px/s, confidently seen
        tracker.update(at(second), [person(100 + 50 * second)], frame())
    for second in range(4, 10):  # stops at 290, unseen
        tracker.update(at(second), [], None)
    # Walking on, they would be at 600 by now: they are looked for where they would be 2 s on too.
    tracker.update(at(10), [person(290)], frame())
    tracker.update(at(11), [person(340)], frame())
    (visit,) = tracker.finish()
    assert (visit.start, visit.end, visit.frames) == (at(0), at(11), 6)


def test_a_bus_entering_from_the_frames_edge_seen_in_part_by_a_region_stays_one():
    """A bus drives in from the right at about 50 px/s, its boxes cut by the frame's edge, then a
    region cut around part of it sees its right half: the velocity comes from the edges that are
    the bus's own, not from the boxes' centres (which would say it went back right at 150 px/s)."""
    tracker = Tracker(start_score=0.4)
    right, left_cut = (False, False, True, False), (True, False, False, False)
    sightings = [
        (26, 0.72, (517, 229, 639, 344), right),
        (27, 0.60, (470, 226, 640, 346), right),
        (28, 0.66, (423, 222, 640, 355), right),
        (30, 0.82, (328, 227, 640, 355), right),
        (31, 0.35, (480, 229, 609, 352), left_cut),
        (32, 0.84, (253, 226, 561, 356), (False, False, False, False)),
        (33, 0.81, (228, 225, 516, 357), (False, False, False, False)),
    ]
    for second, score, box, cut in sightings:
        tracker.update(at(second), [FrameBox("bus", score, box, cut)], frame())
    assert [(o.start, o.end, o.frames) for o in tracker.finish()] == [(at(26), at(33), 7)]


def test_someone_else_entering_where_a_person_left_is_another_object():
    """A person 200 px tall walks out of the frame at the left; a few seconds later one 50 px tall
    (farther off) walks in there: close enough to be the first, but a quarter of their size."""
    tracker = Tracker(TrackingSettings(lost_after_s=12))
    for second in range(4):
        tracker.update(at(second), [person(410 - 120 * second, y=360, w=90, h=210)], frame())
    for second in range(4, 7):
        tracker.update(at(second), [], None)
    for second in range(7, 11):
        tracker.update(at(second), [person(30 * (second - 7), y=355, w=28, h=50)], frame())
    objects = sorted(tracker.finish(), key=lambda o: o.start)
    assert [(o.start, o.end) for o in objects] == [(at(0), at(3)), (at(7), at(10))]


def test_a_person_who_stood_unseen_and_walked_on_is_one_visit():
    """A small person walks in at 55 px/s, stands 20 s (seen by the periodic look, then not), and
    walks on: found 165 px from where they stood, 11 s after they were last seen there."""
    tracker = Tracker(TrackingSettings(lost_after_s=12))
    for second in range(0, 5):
        tracker.update(at(second), [person(870 - 55 * second, w=30, h=70)], frame())
    for second in range(5, 22):
        seen = [person(650, w=30, h=70)] if second in (5, 10) else []
        tracker.update(at(second), seen, frame() if seen else None)
    for second in range(21, 25):
        tracker.update(at(second), [person(650 - 55 * (second - 18), w=30, h=70)], frame())
    (visit,) = tracker.finish()
    assert (visit.start, visit.end) == (at(0), at(24))


def test_a_person_who_left_the_frame_does_not_become_the_next_one_entering_there():
    """A 220 px person walks out at the left; 8 s later a 100 px one walks in there (under 3x
    smaller, close to where the first was expected): the first left the frame, and who enters there
    is taken for them only at their size."""
    tracker = Tracker(TrackingSettings(lost_after_s=12))
    for second in range(4):
        tracker.update(at(second), [person(390 - 100 * second, y=360, w=120, h=220)], frame())
    tracker.update(at(4), [FrameBox("person", 0.6, (0, 360, 110, 580), (True, False, False, False))], frame())
    for second in range(5, 12):
        tracker.update(at(second), [], None)
    for second in range(12, 16):
        tracker.update(at(second), [person(75 * (second - 12), y=360, w=50, h=100)], frame())
    objects = sorted(tracker.finish(), key=lambda o: o.start)
    assert [(o.start, o.end) for o in objects] == [(at(0), at(4)), (at(12), at(15))]


def test_a_box_showing_part_of_a_person_does_not_shrink_how_far_they_are_looked_for():
    """A person 85 px tall walks, stands, walks on; a 38 px box of part of them joins, and their
    next whole box, 70 px on, is still them: reach is measured by the object's size, not the part's."""
    tracker = Tracker(TrackingSettings(lost_after_s=12), start_score=0.33)
    for second in range(0, 5):
        tracker.update(at(second), [person(545 - 55 * second, y=356, w=50, h=85)], frame())
    for second in range(5, 15):
        seen = [person(326, y=356, w=50, h=85)] if second % 5 == 0 else []
        tracker.update(at(second), seen, frame() if seen else None)
    tracker.update(at(18), [FrameBox("person", 0.33, (248, 355, 262, 393))], frame())
    for second in range(19, 22):
        tracker.update(at(second), [person(161 - 55 * (second - 19), y=358, w=49, h=83)], frame())
    (visit,) = tracker.finish()
    assert (visit.start, visit.end) == (at(0), at(21))


def test_two_boxes_of_one_thing_in_a_frame_start_no_second_object():
    """A truck stopping: one region sees part of it, another all of it, each box a truck."""
    tracker = Tracker(start_score=0.4)
    tracker.update(at(0), [FrameBox("truck", 0.61, (920, 487, 1280, 625))], frame())
    tracker.update(at(1), [FrameBox("truck", 0.64, (568, 492, 850, 627))], frame())
    both = [FrameBox("truck", 0.52, (561, 491, 811, 631)), FrameBox("truck", 0.43, (409, 489, 757, 629))]
    tracker.update(at(2), both, frame())
    for second in range(3, 6):
        tracker.update(at(second), [FrameBox("truck", 0.6, (410, 488, 812, 632))], frame())
    assert [(o.start, o.end) for o in tracker.finish()] == [(at(0), at(5))]


def test_the_thumbnail_is_a_small_jpeg_of_the_best_frame_with_its_box():
    tracker = Tracker(TrackingSettings(thumbnail_width=320))
    best = frame(200)
    tracker.update(at(0), [person(600, score=0.5)], frame(40))
    tracker.update(at(1), [person(640, score=0.9)], best)
    tracker.update(at(2), [person(680, score=0.6)], frame(40))
    (obj,) = tracker.finish()
    assert obj.thumbnail is not None and obj.thumbnail[:2] == b"\xff\xd8"
    image = Image.open(io.BytesIO(obj.thumbnail))
    assert image.format == "JPEG" and image.size == (320, 180)
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert abs(pixels[20, 20] - 200).max() < 12  # the best frame, not another one
    box_edge = pixels[round(300 / 4) + 5, round(640 / 4)]  # left edge of the box, scaled by 320/1280
    assert box_edge[0] > 200 and box_edge[1] < 120
