"""The one safe-name rule: recorder names, segment names and file stems become one path component."""

from __future__ import annotations

import pytest

from core.names import MAX_NAME_LENGTH, UnsafeNameError, sanitise_name
from core.segment import file_segment_name

SHA = "ab" * 32


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("00000002153000312", "00000002153000312"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("/etc/passwd", "_etc_passwd"),
        ("a\x00b", "a_b"),
        ("C:\\Windows\\x", "C_Windows_x"),
        ("..hidden", "hidden"),
        ("NVR Hall #1", "NVR_Hall_1"),
        ("cam $(touch${IFS}pwned);`id`|x & y", "cam_touch_IFS_pwned_id_x_y"),
        ("caméra-1", "cam_ra-1"),
    ],
)
def test_sanitise_name(raw: str, expected: str) -> None:
    assert sanitise_name(raw) == expected


@pytest.mark.parametrize("raw", ["", "..", ".", "/", "\x00", "///", "$()"])
def test_sanitise_refuses_empty_results(raw: str) -> None:
    with pytest.raises(UnsafeNameError):
        sanitise_name(raw)


def test_one_length_limit_for_every_name() -> None:
    assert len(sanitise_name("x" * 1000)) == MAX_NAME_LENGTH
    # The ingest name adds a 17-character hash prefix to the same rule's result.
    assert file_segment_name(SHA, "y" * 1000 + ".mp4") == f"{SHA[:16]}-{'y' * MAX_NAME_LENGTH}"


@pytest.mark.parametrize(
    ("file_name", "stem"),
    [
        ("kitchen cam.mp4", "kitchen_cam"),
        ("../../etc/passwd.mp4", "passwd"),  # Path.stem already drops the folders
        ("..hidden.mp4", "hidden"),
        ("$().mp4", "video"),  # nothing usable left
        (".mp4", "mp4"),  # a dot file: its whole name is the stem
    ],
)
def test_ingested_file_names_follow_the_same_rule(file_name: str, stem: str) -> None:
    assert file_segment_name(SHA, file_name) == f"{SHA[:16]}-{stem}"
