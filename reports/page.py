"""The report: a folder holding one HTML page for a window of footage and its clips (no Prefect,
no SQL here).

Per recorder and channel: the transcoded MP4s as HTML5 videos, a timeline of the top-1 labels
drawn as inline SVG, the most frequent labels, and what failed. No script and no network
resource. The clips are linked (hard links where the file system allows, else copies) into
`clips/` beside the page and played from there, so the folder plays wherever it is copied.
"""

from __future__ import annotations

import html
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from core.names import sanitise_name

TOP_LABELS = 5
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
OTHER_COLOUR = "#b0b0b0"


@dataclass
class Channel:
    recorder: str
    channel: int
    segments: list[dict] = field(default_factory=list)
    # (frame time, label, score) of rank 1, in time order
    frames: list[tuple[datetime, str, float]] = field(default_factory=list)

    def top_labels(self, k: int = TOP_LABELS) -> list[tuple[str, int]]:
        return Counter(label for _, label, _ in self.frames).most_common(k)


@dataclass
class ReportData:
    start: datetime
    end: datetime
    channels: list[Channel]
    failed_runs: list[dict]
    prefect_note: str = ""
    # One row per recorder with hours the ledger does not hold as complete (core.windows.gap_rows).
    gaps: list[dict] = field(default_factory=list)

    def missing_outputs(self) -> list[dict]:
        return [s for c in self.channels for s in c.segments if not _has_output(s["output_path"])]


def _has_output(path: str) -> bool:
    return bool(path) and Path(path).is_file() and Path(path).stat().st_size > 0


# --- rendering ---------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-bottom: .3em; }
.videos { display: flex; flex-wrap: wrap; gap: .8em; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
video { width: 320px; height: 180px; background: #000; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
.failures { color: #a40000; } .ok { color: #2a7a2a; } .legend span { margin-right: 1em; }
.swatch { display: inline-block; width: .9em; height: .9em; margin-right: .3em; vertical-align: middle; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _colours(channels: list[Channel]) -> dict[str, str]:
    counts = Counter(label for c in channels for _, label, _ in c.frames)
    return {label: PALETTE[i] for i, (label, _) in enumerate(counts.most_common(len(PALETTE)))}


def _runs(
    frames: list[tuple[datetime, str, float]], gap_s: float = 2.0
) -> list[tuple[datetime, datetime, str, int, float]]:
    """Consecutive frames with one label as one bar: (from, to, label, frames, best score)."""
    bars: list[list] = []
    for when, label, score in frames:
        last = bars[-1] if bars else None
        if last and last[2] == label and (when - last[1]).total_seconds() <= gap_s:
            last[1], last[3], last[4] = when, last[3] + 1, max(last[4], score)
        else:
            bars.append([when, when, label, 1, score])
    return [tuple(b) for b in bars]


def timeline_svg(
    channel: Channel, start: datetime, end: datetime, colours: dict[str, str], width: int = 900
) -> str:
    """Top-1 label over time: one lane per label, a bar per run of frames; segments shaded behind."""
    labels = [label for label, _ in channel.top_labels(k=len(PALETTE))]
    lanes = labels + (["other"] if any(lbl not in labels for _, lbl, _ in channel.frames) else [])
    left, lane_h, top = 150, 18, 8
    height = top + lane_h * max(len(lanes), 1) + 30
    span = max((end - start).total_seconds(), 1.0)
    step = _sample_step(channel.frames)

    def x(when: datetime) -> float:
        return left + (width - left - 10) * min(max((when - start).total_seconds() / span, 0.0), 1.0)

    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="labels over time, {_e(channel.recorder)} '
        f'channel {channel.channel}">'
    ]
    for seg in channel.segments:
        x0, x1 = x(seg["start"]), x(seg["end"])
        parts.append(
            f'<rect class="segment" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1):.1f}" '
            f'height="{lane_h * max(len(lanes), 1)}" fill="#f3f3f3" stroke="#ddd"><title>{_e(seg["segment"])}</title></rect>'
        )
    for i, lane in enumerate(lanes):
        y = top + i * lane_h
        parts.append(
            f'<text x="{left - 6}" y="{y + lane_h - 5}" text-anchor="end" font-size="11">{_e(lane[:24])}</text>'
        )
    for first, last, label, n, best in _runs(channel.frames):
        row = lanes.index(label) if label in labels else len(lanes) - 1
        x0 = x(first)
        x1 = max(x(last + timedelta(seconds=step)), x0 + 2)
        colour = colours.get(label, OTHER_COLOUR)
        tip = f"{label}: {n} frame(s) from {first:%H:%M:%S} to {last:%H:%M:%S}, best score {best:.2f}"
        parts.append(
            f'<rect class="mark" x="{x0:.1f}" y="{top + row * lane_h + 2}" width="{x1 - x0:.1f}" '
            f'height="{lane_h - 4}" fill="{colour}"><title>{_e(tip)}</title></rect>'
        )
    axis_y = top + lane_h * max(len(lanes), 1) + 14
    for k in range(5):
        when = start + timedelta(seconds=span * k / 4)
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        parts.append(
            f'<text x="{x(when):.1f}" y="{axis_y}" text-anchor="{anchor}" font-size="10">{when:%H:%M:%S}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _sample_step(frames: list[tuple[datetime, str, float]]) -> float:
    """Seconds between samples, so that a bar covers its last frame too."""
    gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(frames, frames[1:], strict=False)]
    return min((g for g in gaps if g > 0), default=1.0)


CLIPS = "clips"


def clip_name(seg: dict) -> str:
    """A segment's clip inside the report folder: clips/<recorder>/<channel>/<segment>.mp4."""
    return (
        f"{CLIPS}/{sanitise_name(seg['recorder'])}/{int(seg['channel'])}/{sanitise_name(seg['segment'])}.mp4"
    )


def _video_src(seg: dict) -> str:
    # The media fragment makes the browser show a frame at 0.1 s instead of a black box.
    return quote(clip_name(seg), safe="/") + "#t=0.1"


def _link_clip(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copyfile(source, target)


def render(data: ReportData) -> str:
    colours = _colours(data.channels)
    title = f"nvrflow report {data.start:%Y-%m-%d %H:%M:%S} .. {data.end:%Y-%m-%d %H:%M:%S} UTC"
    body = [f"<h1>{_e(title)}</h1>"]
    n_segments = sum(len(c.segments) for c in data.channels)
    body.append(
        f"<p>{len(data.channels)} channel(s), {n_segments} segment(s), "
        f"{sum(len(c.frames) for c in data.channels)} classified frame(s).</p>"
    )
    body.append(_gaps_html(data))
    body.append(_failures_html(data))
    recorder = None
    for channel in data.channels:
        if channel.recorder != recorder:
            recorder = channel.recorder
            body.append(f'<h2 id="{_e(recorder)}">{_e(recorder)}</h2>')
        body.append(f"<h3>channel {channel.channel}</h3>")
        body.append('<div class="videos">')
        for seg in channel.segments:
            caption = (f"{seg['segment']} · {seg['start']:%H:%M:%S}–{seg['end']:%H:%M:%S} · "
                       f"{seg['source_codec']} → {seg['transcode_mode']} · {seg['duration_s']:.1f} s")  # fmt: skip
            if _has_output(seg["output_path"]):
                media = (f'<video controls preload="metadata" data-segment="{_e(seg["segment"])}" '
                         f'src="{_e(_video_src(seg))}"></video>')  # fmt: skip
            else:
                media = '<p class="failures">output missing</p>'
            body.append(f"<figure>{media}<figcaption>{_e(caption)}</figcaption></figure>")
        body.append("</div>")
        if channel.frames:
            body.append(timeline_svg(channel, data.start, data.end, colours))
            legend = "".join(
                f'<span><i class="swatch" style="background:{colours.get(label, OTHER_COLOUR)}"></i>'
                f"{_e(label)} ({n})</span>"
                for label, n in channel.top_labels()
            )
            body.append(f'<p class="legend">top labels (frames): {legend}</p>')
        else:
            body.append("<p>no classified frames</p>")
    if not data.channels:
        body.append("<p>No segments in this window.</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


def _gaps_html(data: ReportData) -> str:
    parts = ['<section class="gaps-section"><h2>Gaps</h2>']
    if not data.gaps:
        parts.append('<p class="ok">every recorder-hour of the window is complete</p>')
    else:
        parts.append(
            '<table class="failures"><tr><th>recorder</th><th>hours missing</th><th>first</th><th>last</th></tr>'
        )
        parts += [
            f"<tr><td>{_e(g['recorder'])}</td><td>{_e(g['hours missing'])}</td><td>{_e(g['first'])}</td>"
            f"<td>{_e(g['last'])}</td></tr>"
            for g in data.gaps
        ]
        parts.append("</table><p>Run them with <code>python -m flows.backfill</code>.</p>")
    parts.append("</section>")
    return "".join(parts)


def _failures_html(data: ReportData) -> str:
    missing = data.missing_outputs()
    parts = ['<section class="failures-section"><h2>Failures</h2>']
    if not missing and not data.failed_runs:
        parts.append('<p class="ok">none</p>')
    if missing:
        parts.append('<p class="failures">segments without an output file:</p><ul class="failures">')
        parts += [
            f"<li>{_e(s['recorder'])} ch{_e(s['channel'])} {_e(s['segment'])}: {_e(s['output_path'] or 'no path')}</li>"
            for s in missing
        ]
        parts.append("</ul>")
    if data.failed_runs:
        parts.append(
            '<table class="failures"><tr><th>flow run</th><th>recorder</th><th>state</th><th>message</th></tr>'
        )
        parts += [
            f"<tr><td>{_e(r['name'])}</td><td>{_e(r['recorder'])}</td><td>{_e(r['state'])}</td>"
            f"<td>{_e(r['message'][:500])}</td></tr>"
            for r in data.failed_runs
        ]
        parts.append("</table>")
    if data.prefect_note:
        parts.append(f"<p>{_e(data.prefect_note)}</p>")
    parts.append("</section>")
    return "".join(parts)


def write_report(data: ReportData, out: Path) -> Path:
    """The page at `out`, its clips in `clips/` beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for channel in data.channels:
        for seg in channel.segments:
            if _has_output(seg["output_path"]):
                _link_clip(Path(seg["output_path"]), out.parent / clip_name(seg))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render(data), encoding="utf-8")
    os.replace(tmp, out)
    return out
