"""Hikvision download form: a 40-byte `IMKH` media header followed by an MPEG-2 Program Stream.

ffmpeg's own PS muxer refuses G.711 and has no way to label HEVC, so this module writes the
Program Stream itself, the way Hikvision recorders lay it out:

- every video access unit starts a pack (0xBA); key frames also carry a system header (0xBB)
  and a program stream map (0xBC) that labels the streams: 0x1B H.264, 0x24 H.265,
  0x90 G.711 A-law, 0x91 G.711 mu-law (Hikvision's private stream types);
- video travels in PES 0xE0 (split below the 64 KiB PES limit, PTS on the first piece),
  audio in PES 0xC0 in 40 ms packets of raw G.711 bytes.

ffmpeg's mpegps demuxer recognises the `IMKH` header (it then reads 0xC0 as G.711 at 8 kHz;
ffmpeg 5.1 labels it pcm_alaw even for mu-law, as it does for real Hikvision files) and uses
the map to tell H.264 from HEVC, so `ffprobe` reads the file as the recorder serves it. With `-skip_initial_bytes 40` the video is still labelled by the
map; the audio stream is then guessed as MPEG audio, as with any headerless Hikvision PS.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

CLOCK = 90_000
HEADER_SIZE = 40
PTS_BASE = CLOCK  # one second in, so no timestamp arithmetic ever goes negative

# MEDIA_INFO codes from Hikvision's PlayM4/HCNetSDK headers.
_SYSTEM_MPEG2_PS = 0x0002
_VIDEO_FORMAT = {"h264": 0x0100, "h265": 0x0005}
_AUDIO_FORMAT = {"none": 0x0000, "g711a": 0x7111, "g711u": 0x7110}
_STREAM_TYPE_VIDEO = {"h264": 0x1B, "h265": 0x24}
_STREAM_TYPE_AUDIO = {"g711a": 0x90, "g711u": 0x91}

VIDEO_ID = 0xE0
AUDIO_ID = 0xC0
_MAX_PES_PAYLOAD = 65_000
AUDIO_PACKET_BYTES = 320  # 40 ms of 8 kHz G.711


def imkh_header(codec: str, audio: str) -> bytes:
    """The 40-byte MEDIA_INFO block Hikvision puts in front of every downloaded file.

    Layout (little endian): fourcc "IMKH", version 0x0101, device id, system format
    (2 = MPEG-2 PS), video format, audio format, channels, bits per sample, sample rate,
    bit rate, 16 reserved bytes.
    """
    has_audio = audio != "none"
    return struct.pack(
        "<4sHHHHHBBII16x",
        b"IMKH",
        0x0101,
        0,
        _SYSTEM_MPEG2_PS,
        _VIDEO_FORMAT[codec],
        _AUDIO_FORMAT[audio],
        1 if has_audio else 0,
        16 if has_audio else 0,
        8000 if has_audio else 0,
        64_000 if has_audio else 0,
    )


def _crc32_mpeg(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


def _pack_header(scr: int, mux_rate: int = 50_000) -> bytes:
    b = bytearray(b"\x00\x00\x01\xba")
    b.append(0x44 | ((scr >> 27) & 0x38) | ((scr >> 28) & 0x03))
    b.append((scr >> 20) & 0xFF)
    b.append(((scr >> 12) & 0xF8) | 0x04 | ((scr >> 13) & 0x03))
    b.append((scr >> 5) & 0xFF)
    b.append(((scr << 3) & 0xF8) | 0x04)  # SCR extension 0
    b.append(0x01)
    b += ((mux_rate << 2) | 0x03).to_bytes(3, "big")
    b.append(0xF8)  # reserved bits, no stuffing
    return bytes(b)


def _system_header(has_audio: bool) -> bytes:
    streams = bytes([VIDEO_ID, 0xE0 | 0x20 | 0x00, 0x80])  # video: scale 1024, 128 KiB
    if has_audio:
        streams += bytes([AUDIO_ID, 0xC0, 0x20])  # audio: scale 128, 4 KiB
    rate_bound = 50_000
    body = bytes(
        [
            0x80 | ((rate_bound >> 15) & 0x7F),
            (rate_bound >> 7) & 0xFF,
            ((rate_bound << 1) & 0xFE) | 0x01,
            (1 if has_audio else 0) << 2 | 0x00,  # audio_bound, not fixed, not CSPS
            0xE1,  # locks, marker, video_bound 1
            0x7F,
        ]
    )
    body += streams
    return b"\x00\x00\x01\xbb" + struct.pack(">H", len(body)) + body


def _program_stream_map(codec: str, audio: str) -> bytes:
    es_map = bytes([_STREAM_TYPE_VIDEO[codec], VIDEO_ID, 0, 0])
    if audio != "none":
        es_map += bytes([_STREAM_TYPE_AUDIO[audio], AUDIO_ID, 0, 0])
    body = bytes([0xE0, 0xFF]) + struct.pack(">H", 0) + struct.pack(">H", len(es_map)) + es_map
    length = len(body) + 4
    without_crc = b"\x00\x00\x01\xbc" + struct.pack(">H", length) + body
    return without_crc + struct.pack(">I", _crc32_mpeg(without_crc))


def _pts_bytes(pts: int) -> bytes:
    return bytes(
        [
            0x21 | ((pts >> 29) & 0x0E),
            (pts >> 22) & 0xFF,
            ((pts >> 14) & 0xFE) | 0x01,
            (pts >> 7) & 0xFF,
            ((pts << 1) & 0xFE) | 0x01,
        ]
    )


def _pes(stream_id: int, payload: bytes, pts: int | None) -> Iterator[bytes]:
    """One or more PES packets; only the first carries the PTS."""
    first = True
    for offset in range(0, max(len(payload), 1), _MAX_PES_PAYLOAD):
        piece = payload[offset : offset + _MAX_PES_PAYLOAD]
        if first and pts is not None:
            optional = bytes([0x84, 0x80, 5]) + _pts_bytes(pts)
        else:
            optional = bytes([0x80, 0x00, 0])
        yield b"\x00\x00\x01" + bytes([stream_id]) + struct.pack(">H", len(optional) + len(piece))
        yield optional + piece
        first = False


@dataclass(frozen=True)
class AccessUnit:
    data: bytes
    keyframe: bool


def split_access_units(stream: bytes, codec: str) -> list[AccessUnit]:
    """Cut an Annex B stream written with access unit delimiters into access units."""
    starts: list[int] = []
    keyframe_flags: list[bool] = []
    pos = stream.find(b"\x00\x00\x01")
    while pos != -1:
        header = stream[pos + 3] if pos + 3 < len(stream) else 0
        nal_type = header & 0x1F if codec == "h264" else (header >> 1) & 0x3F
        is_aud = nal_type == 9 if codec == "h264" else nal_type == 35
        is_key = nal_type == 5 if codec == "h264" else 16 <= nal_type <= 21
        if is_aud:
            starts.append(pos - 1 if pos > 0 and stream[pos - 1] == 0 else pos)
            keyframe_flags.append(False)
        elif is_key and keyframe_flags:
            keyframe_flags[-1] = True
        pos = stream.find(b"\x00\x00\x01", pos + 3)
    if not starts:
        raise ValueError("no access unit delimiters in the elementary stream")
    ends = starts[1:] + [len(stream)]
    return [AccessUnit(stream[s:e], key) for s, e, key in zip(starts, ends, keyframe_flags, strict=True)]


def mux(video: bytes, codec: str, fps: int, audio: bytes = b"", audio_kind: str = "none") -> Iterator[bytes]:
    """Yield the whole download file (IMKH header + PS) piece by piece.

    `video` is an Annex B stream with access unit delimiters and no B-frames (so decode
    order is presentation order), `audio` raw 8 kHz G.711 bytes.
    """
    yield imkh_header(codec, audio_kind)
    has_audio = audio_kind != "none" and bool(audio)
    frame_ticks = CLOCK // fps
    audio_ticks = AUDIO_PACKET_BYTES * CLOCK // 8000
    audio_pos = 0
    for index, unit in enumerate(split_access_units(video, codec)):
        pts = PTS_BASE + index * frame_ticks
        while has_audio and audio_pos < len(audio):
            audio_pts = PTS_BASE + (audio_pos // AUDIO_PACKET_BYTES) * audio_ticks
            if audio_pts > pts:
                break
            yield _pack_header(audio_pts)
            yield from _pes(AUDIO_ID, audio[audio_pos : audio_pos + AUDIO_PACKET_BYTES], audio_pts)
            audio_pos += AUDIO_PACKET_BYTES
        yield _pack_header(pts)
        if unit.keyframe or index == 0:
            yield _system_header(has_audio)
            yield _program_stream_map(codec, audio_kind if has_audio else "none")
        yield from _pes(VIDEO_ID, unit.data, pts)
    while has_audio and audio_pos < len(audio):
        audio_pts = PTS_BASE + (audio_pos // AUDIO_PACKET_BYTES) * audio_ticks
        yield _pack_header(audio_pts)
        yield from _pes(AUDIO_ID, audio[audio_pos : audio_pos + AUDIO_PACKET_BYTES], audio_pts)
        audio_pos += AUDIO_PACKET_BYTES
