"""Scripted scenes: the truth of a script, the footage made from it, and the simulator serving it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from skimage.transform import resize

from stack.ports import HOST, free_port
from stack.simulator import control
from stack.simulator.cutouts import BACKGROUNDS, CUTOUTS, background_pixels, cutout_pixels
from stack.simulator.recordings import build_catalogue
from stack.simulator.scene_footage import ensure_scene_clip
from stack.simulator.scenes import (
    DEMO_SCRIPTS,
    VISIBLE_FRACTION,
    Actor,
    Script,
    Waypoint,
    in_view_fraction,
    make_script,
    script_from_dict,
    truth,
)
from stack.simulator.spec import RecorderSpec, demo_spec, demo_window, load_spec, spec_from_dict
from video.probe import probe

START = datetime(2026, 11, 1, 2, 0, 0, tzinfo=UTC)
W, H, FPS = 320, 180, 10


def _utc(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).isoformat()


def _seconds(iso: str) -> float:
    return (datetime.fromisoformat(iso) - START).total_seconds()


# A fireman 100 px tall walks across a 640x360 frame in 6 s (t = 2..8), 120 px/s, left to right.
WALKER = Script(
    "pasture",
    640,
    360,
    12.0,
    (Actor("w1", "fireman-a", (Waypoint(2, -40, 300, 100), Waypoint(8, 680, 300, 100))),),
)

# A sedan 30 px tall in a 320x180 frame: drives in, stops 3 s, drives out; nothing after t = 9.
SEDAN = Script(
    "cliff",
    W,
    H,
    20.0,
    (
        Actor(
            "c1",
            "sedan",
            (
                Waypoint(0, -60, 120, 30),
                Waypoint(3, 160, 120, 30),
                Waypoint(6, 160, 120, 30),
                Waypoint(9, 380, 120, 30),
            ),
        ),
    ),
)


def _inside_share(t: float) -> float:
    """Share of the walker's opaque area inside the frame at t, from its alpha scaled on its own."""
    _, alpha = cutout_pixels("fireman-a")
    width = round(100 * alpha.shape[1] / alpha.shape[0])
    scaled = resize(alpha[:, ::-1], (100, width), order=1)  # it faces left and walks right: mirrored
    left = round(-40 + 120 * (t - 2) - width / 2)
    columns = scaled.sum(axis=0)
    inside = [c for i, c in enumerate(columns) if 0 <= left + i < 640]
    return float(sum(inside) / columns.sum())


def test_truth_of_a_crossing_has_its_first_and_last_visible_instants_and_boxes():
    [walker] = truth(WALKER, START, fps=FPS)
    assert walker["id"] == "w1" and walker["label"] == "person"
    first, last = _seconds(walker["first_visible_utc"]), _seconds(walker["last_visible_utc"])
    # Half of it in view about when its middle crosses the edge: x = 0 at t = 2.33, x = 640 at 7.67.
    assert 2.1 <= first <= 2.6 and 7.4 <= last <= 7.9
    assert (
        _inside_share(first) >= VISIBLE_FRACTION - 0.02 and _inside_share(first - 1 / FPS) < VISIBLE_FRACTION
    )
    assert _inside_share(last) >= VISIBLE_FRACTION - 0.02 and _inside_share(last + 1 / FPS) < VISIBLE_FRACTION
    assert [b["t"] for b in walker["boxes"]] == [3, 4, 5, 6, 7]
    _, alpha = cutout_pixels("fireman-a")
    width = round(100 * alpha.shape[1] / alpha.shape[0])
    at_5 = next(b for b in walker["boxes"] if b["t"] == 5)
    assert at_5["box"] == [round(320 - width / 2), 200, round(320 - width / 2) + width, 300]
    assert at_5["utc"] == _utc(5)
    at_7 = next(b for b in walker["boxes"] if b["t"] == 7)
    assert at_7["box"] == [round(560 - width / 2), 200, round(560 - width / 2) + width, 300]


def test_truth_scales_to_another_frame_size():
    [small] = truth(WALKER, START, fps=FPS, width=320, height=180)
    [full] = truth(WALKER, START, fps=FPS)
    assert small["first_visible_utc"] == full["first_visible_utc"]
    at_5 = next(b for b in small["boxes"] if b["t"] == 5)["box"]
    assert at_5[1] == 100 and at_5[3] == 150


def test_script_json_round_trips_and_its_labels_are_checked():
    data = json.loads(SEDAN.to_json())
    assert data["actors"][0]["label"] == "car"
    assert script_from_dict(data) == SEDAN
    data["actors"][0]["label"] = "person"
    with pytest.raises(ValueError, match="is a car"):
        script_from_dict(data)


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path), format="mpeg") as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _changed_box(frame: np.ndarray, empty: np.ndarray) -> tuple[int, int, int, int] | None:
    """Box of the pixels that differ from the empty scene by more than grain and coding do."""
    changed = np.abs(frame.astype(np.int16) - empty.astype(np.int16)).sum(axis=2) > 40
    rows = np.flatnonzero(changed.sum(axis=1) >= 2)
    cols = np.flatnonzero(changed.sum(axis=0) >= 2)
    if not len(rows) or not len(cols):
        return None
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def test_rendered_clip_shows_the_actor_where_the_truth_says_and_nothing_else():
    clip = ensure_scene_clip(SEDAN, 0, 20, "h264", "none", W, H, FPS)
    assert clip.read_bytes()[:4] == b"IMKH"
    frames = _decode(clip)
    assert len(frames) == 20 * FPS
    background = background_pixels("cliff", W, H).astype(np.int16)
    # The empty scene as coded (the texture's chroma and coding errors are static): the median
    # of the frames of t = 10..15 s, when nothing is in view; its grain averages away.
    empty = np.median(np.stack(frames[10 * FPS : 15 * FPS]), axis=0)
    assert np.abs(empty - background).mean() < 4
    [sedan] = truth(SEDAN, START, fps=FPS)
    boxes = {b["t"]: b["box"] for b in sedan["boxes"]}
    assert boxes[8][2] == W  # leaving through the right edge: clipped
    for t in (2, 5, 8):
        seen = _changed_box(frames[t * FPS], empty)
        assert seen is not None, f"nothing drawn at t={t}"
        assert np.abs(np.array(seen) - np.array(boxes[t])).max() <= 2, (t, seen, boxes[t])
    for t in (16, 18, 19):  # still empty: the background, up to sensor grain and coding
        assert _changed_box(frames[t * FPS], empty) is None
        assert np.abs(frames[t * FPS] - background).mean() < 6


def test_a_looped_clip_replays_the_script_with_its_audio_and_timestamps_running_on():
    once = ensure_scene_clip(SEDAN, 0, 20, "h264", "none", W, H, FPS)
    looped = ensure_scene_clip(SEDAN, 0, 20, "h264", "g711a", W, H, FPS, loops=3)
    assert looped != once
    probed = probe(looped)
    assert probed.audio_codec == "pcm_alaw"
    assert probed.duration_s == pytest.approx(60, abs=0.2)
    frames, first = _decode(looped), _decode(once)
    assert len(frames) == 3 * len(first)
    for t in (2, 5, 8):  # the sedan again where it was, in the third pass of the script
        seen = _changed_box(frames[(40 + t) * FPS], first[15 * FPS])
        assert seen == _changed_box(first[t * FPS], first[15 * FPS]), t


def test_generated_scripts_are_deterministic_and_mostly_empty():
    assert make_script(3, 3600).to_json() == make_script(3, 3600).to_json()
    assert make_script(3, 3600).to_json() != make_script(4, 3600).to_json()
    heights, pairs = [], 0
    for seed in (1, 2, 3):
        script = make_script(seed, 3600)
        assert 0.10 <= in_view_fraction(script) <= 0.30, (seed, in_view_fraction(script))
        assert all(0 <= a.start and a.end <= 3600 for a in script.actors)
        heights += [w.h for a in script.actors for w in a.path]
        spans = sorted((a.start, a.end) for a in script.actors)
        pairs += sum(1 for (_, end), (start, _) in zip(spans, spans[1:], strict=False) if start < end)
        objects = truth(script, START, fps=5)
        assert {o["label"] for o in objects} >= {"person", "car"}
        for o in objects:  # every actor enters and leaves: nobody is in view at either end
            assert 0 < _seconds(o["first_visible_utc"]) < _seconds(o["last_visible_utc"]) < 3600
    assert min(heights) < 60 and max(heights) > 250  # from far off to half the frame's height
    assert pairs >= 3  # sometimes two at once


def test_demo_scripts_have_people_and_vehicles_coming_and_going_inside_the_demo_window():
    window_start, window_end = demo_window()
    recording_start = window_start - timedelta(seconds=20)
    for name, script in DEMO_SCRIPTS.items():
        objects = truth(script, recording_start, fps=FPS)
        assert {o["label"] for o in objects} & {"person"}, name
        assert {o["label"] for o in objects} & {"car", "truck", "bus"}, name
        for o in objects:
            first = datetime.fromisoformat(o["first_visible_utc"])
            last = datetime.fromisoformat(o["last_visible_utc"])
            assert window_start < first < last < window_end, (name, o["id"])
    scripted = spec_from_dict(
        json.loads(json.dumps(demo_spec([free_port(), free_port(), free_port()], "pw", scripted=True)))
    )
    assert {c.script for r in scripted.recorders for c in r.channels} == set(DEMO_SCRIPTS)


def test_sources_name_their_package_and_licence():
    for source in [*CUTOUTS.values(), *BACKGROUNDS.values()]:
        assert source.package.split(":")[0] in ("debian", "pypi") and source.version and source.licence
    for name, cutout in CUTOUTS.items():
        rgb, alpha = cutout_pixels(name)
        assert rgb.shape[:2] == alpha.shape and alpha.max() > 0.9 and cutout.label
        assert alpha[0].max() > 0.04 and alpha[-1].max() > 0.04  # cropped to the object


def _scripted_recorder(port: int, script_file: Path) -> dict:
    return {
        "name": "nvr-scenes",
        "port": port,
        "username": "admin",
        "password": "Sim-Pass-123",
        "recording_start": "2026-11-01T02:00:00",
        "recording_end": "2026-11-01T02:00:20",
        "segment_seconds": 5,
        "channels": [{"id": 1, "scene": "cliff", "codec": "h264", "script": str(script_file)}],
    }


def test_scripted_channel_segments_are_slices_of_its_script_served_over_isapi(tmp_path):
    script_file = tmp_path / "sedan.json"
    script_file.write_text(SEDAN.to_json())
    port = free_port()
    recorder = RecorderSpec(**_scripted_recorder(port, script_file))
    segments = build_catalogue(recorder, W, H, FPS)
    assert len(segments) == 4
    assert len({s.path for s in segments}) == 4
    assert len({s.path.read_bytes() for s in segments}) == 4
    # The first segment is the script's first five seconds, rendered alike wherever it is made.
    assert segments[0].path == ensure_scene_clip(SEDAN, 0, 5, "h264", "none", W, H, FPS)
    spec = {"width": W, "height": H, "fps": FPS, "recorders": [_scripted_recorder(port, script_file)]}
    with (
        control.running(spec, tmp_path, ready_timeout=180),
        httpx.Client(auth=httpx.DigestAuth("admin", "Sim-Pass-123"), timeout=30) as client,
    ):
        listed = control.segments(port)
        assert [s["size"] for s in listed] == [s.size for s in segments]
        second = segments[1]
        uri = second.playback_uri()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><downloadRequest version="1.0" '
            f'xmlns="http://www.isapi.org/ver20/XMLSchema"><playbackURI>{uri.replace("&", "&amp;")}'
            "</playbackURI></downloadRequest>"
        )
        r = client.post(f"http://{HOST}:{port}/ISAPI/ContentMgmt/download", content=body)
        assert r.status_code == 200 and r.content == second.path.read_bytes()
    assert load_spec(tmp_path / "simulator-spec.json").recorders[0].channels[0].script == str(script_file)
