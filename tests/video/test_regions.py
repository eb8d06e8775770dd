"""Regions for the detector: squares in the frame, merged when close, cut and mapped back."""

from __future__ import annotations

import numpy as np
import pytest

from video.regions import Candidate, View, cut, iou, regions, square_region, suppress, whole_frame
from video.tracking import TrackingSettings

W, H = 1280, 720


def inside_frame(view: View) -> bool:
    return view.x0 >= 0 and view.y0 >= 0 and view.x0 + view.side <= W and view.y0 + view.side <= H


def contains(view: View, box) -> bool:
    x0, y0, x1, y1 = view.box
    return x0 <= box[0] and y0 <= box[1] and x1 >= box[2] and y1 >= box[3]


@pytest.mark.parametrize(
    "box",
    [(600, 300, 630, 360), (0, 0, 20, 40), (1260, 680, 1280, 720), (100, 50, 400, 700), (500, 100, 900, 200)],
    ids=["small-middle", "top-left-corner", "bottom-right-corner", "tall", "wide"],
)
def test_a_region_is_a_square_inside_the_frame_around_the_box(box):
    view = square_region(box, W, H, 416)
    assert inside_frame(view) and contains(view, box)
    w, h = box[2] - box[0], box[3] - box[1]
    assert view.side == min(int(max(416, 3 * h, 1.75 * w)), H)


def test_a_small_person_or_car_is_magnified_and_a_large_one_keeps_its_context():
    person = square_region((600, 300, 620, 345), W, H, 160)  # 45 px tall: the floor
    car = square_region((600, 400, 720, 440), W, H, 160)  # 120 x 40: by its width
    walker = square_region((600, 300, 640, 390), W, H, 160)  # 90 px tall: by its height
    assert (person.side, car.side, walker.side) == (160, 210, 270)


def test_a_person_taller_than_a_third_of_the_models_input_fills_half_the_region():
    """Three times a 200 px person's height would shrink them for a 416 px model: twice, then."""
    tall = (600, 200, 680, 400)
    assert square_region(tall, W, H, 160, input_size=416).side == 416  # 2x = 400, at least the input
    assert square_region((600, 100, 700, 400), W, H, 160, input_size=416).side == 600  # 300 px: 2x
    assert square_region((600, 300, 640, 420), W, H, 160, input_size=416).side == 360  # 120 px: 3x
    assert square_region(tall, W, H, 160).side == 600  # no model input given: 3x


def test_a_region_is_never_larger_than_a_small_frame():
    view = square_region((10, 10, 50, 90), 640, 360, 416)
    assert view.side == 360 and view.y0 == 0


def test_close_boxes_share_a_region_and_far_ones_do_not():
    close = regions([(500, 300, 530, 360), (600, 320, 630, 380)], W, H, 416)
    assert len(close) == 1 and all(
        contains(close[0], b) for b in [(500, 300, 530, 360), (600, 320, 630, 380)]
    )
    far = regions([(50, 300, 80, 360), (1100, 320, 1130, 380)], W, H, 416)
    assert len(far) == 2 and contains(far[0], (50, 300, 80, 360)) and contains(far[1], (1100, 320, 1130, 380))
    assert regions([], W, H, 416) == []


def test_boxes_too_far_apart_for_one_square_keep_their_own():
    """Squares stop at the frame's shorter side: a standing person at the left and a car leaving at
    the right both need the 720 px square, and a 720 px square around both would hold neither."""
    standing, leaving = (306.0, 344.0, 509.0, 678.0), (961.0, 360.0, 1280.0, 578.0)
    views = regions([standing, leaving], W, H, 160)
    assert len(views) == 2 and contains(views[0], standing) and contains(views[1], leaving)


def test_a_crop_shows_the_region_and_its_boxes_map_back_to_the_frame():
    frame = np.zeros((H, W, 3), dtype=np.uint8)
    frame[300:380, 700:740] = 255
    views = regions([(700, 300, 740, 380)], W, H, 416) + [whole_frame(W, H)]
    crops = cut(frame, views, 416)
    assert crops.shape == (2, 416, 416, 3) and crops.dtype == np.uint8
    assert not crops[1, 416 * H // W + 2 :].any()  # the whole frame is letterboxed: black below
    for view, crop in zip(views, crops, strict=True):
        ys, xs = np.nonzero(crop[..., 0] > 128)
        normalised = (xs.min() / 416, ys.min() / 416, (xs.max() + 1) / 416, (ys.max() + 1) / 416)
        mapped = view.to_frame(normalised, W, H)
        assert mapped == pytest.approx((700, 300, 740, 380), abs=view.side / 416 * 2)


def test_a_box_cut_by_an_inner_edge_of_its_region_is_told_apart():
    view = View(200, 100, 416)
    assert view.cuts((180, 150, 260, 300), W, H)  # runs past the region's left edge, inside the frame
    assert not view.cuts((300, 150, 360, 300), W, H)
    assert not View(0, 0, 416).cuts((0, 0, 60, 100), W, H)  # the frame's edge is not a cut


def test_the_edges_of_a_box_on_its_regions_or_the_frames_edge_are_told():
    view = View(200, 100, 416)  # 200..616 x 100..516 of a 1280 x 720 frame
    assert view.cut_edges((180, 150, 260, 300), W, H) == (True, False, False, False)
    assert view.cut_edges((300, 150, 616, 516), W, H) == (False, False, True, True)
    assert view.cut_edges((300, 150, 360, 300), W, H) == (False, False, False, False)
    whole = whole_frame(W, H)  # letterboxed: its bottom edge is the frame's, at 720
    assert whole.cut_edges((0, 500, 100, 720), W, H) == (True, False, False, True)
    assert whole.cut_edges((1240, 10, 1280, 100), W, H) == (False, False, True, False)


def test_suppression_keeps_one_box_per_object_and_label():
    person = Candidate("person", 0.7, (100, 100, 140, 200))
    same_better = Candidate("person", 0.9, (102, 98, 141, 203))
    part_uncut = Candidate("person", 0.5, (100, 100, 140, 200.5))
    part_cut = Candidate("person", 0.95, (100, 100, 140, 150), cut=True)
    car = Candidate("car", 0.8, (100, 100, 140, 200))
    other = Candidate("person", 0.6, (400, 100, 440, 200))
    assert suppress([person, same_better, car, other]) == [same_better, car, other]
    assert suppress([part_cut, part_uncut]) == [part_uncut]


def test_suppression_by_kind_keeps_one_box_of_a_vehicle_called_car_and_truck():
    car = Candidate("car", 0.6, (100, 100, 300, 200))
    truck = Candidate("truck", 0.7, (105, 98, 302, 204))
    assert suppress([car, truck]) == [truck, car]
    assert suppress([car, truck], kind=TrackingSettings().kind) == [truck]


def test_suppression_across_kinds_keeps_the_better_of_one_thing_and_a_person_by_a_car():
    person = Candidate("person", 0.5, (600, 300, 630, 360))
    same_as_car = Candidate("car", 0.35, (598, 302, 631, 361))
    car_behind = Candidate("car", 0.6, (560, 320, 760, 380))
    assert suppress([person, same_as_car, car_behind]) == [car_behind, person, same_as_car]
    assert suppress([person, same_as_car, car_behind], across=0.6) == [car_behind, person]


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
