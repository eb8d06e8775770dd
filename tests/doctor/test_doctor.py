"""`python -m doctor` against the stack: all ok, then each fault named with how to fix it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from pydantic import SecretStr

from stack.paths import PROJECT_ROOT
from stack.simulator import control
from stack.simulator.spec import load_spec

pytestmark = pytest.mark.stack

RECORDERS = ["--recorder", "nvr-01", "--recorder", "nvr-02", "--recorder", "nvr-03"]


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doctor", "--min-free-gib", "0", *RECORDERS, *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})},
    )  # fmt: skip


def line(output: str, name: str) -> str:
    return next(text for text in output.splitlines() if f"  {name}:" in text)


def fix(output: str, name: str) -> str:
    """The `fix:` line printed under a failed check."""
    lines = output.splitlines()
    following = lines[lines.index(line(output, name)) + 1]
    assert following.lstrip().startswith("fix: "), output
    return following.strip().removeprefix("fix: ")


def test_a_healthy_stack_passes_every_check(stack):
    done = doctor()
    assert done.returncode == 0, done.stdout + done.stderr
    for name in (
        "Prefect API",
        "work pool nvrflow-local",
        "recorder nvr-01",
        "ClickHouse",
        "model server",
        "video store",
        "ffprobe",
    ):
        assert line(done.stdout, name).startswith("ok"), done.stdout
    assert "schema version" in line(done.stdout, "ClickHouse")


def test_a_store_over_its_budget_fails_with_how_to_fix_it(stack, tmp_path, monkeypatch):
    from prefect.filesystems import LocalFileSystem

    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "seg.mp4").write_bytes(b"\0" * 3000)
    LocalFileSystem(basepath=str(tmp_path)).save("doctor-full-store", overwrite=True)
    monkeypatch.setenv("NVRFLOW_STORE_BUDGET_GB", str(2000 / 10**9))
    done = doctor("--video-store-block", "doctor-full-store")
    assert done.returncode == 1, done.stdout + done.stderr
    store = line(done.stdout, "video store")
    assert store.startswith("FAIL") and "1 files" in store and "over budget" in store, done.stdout
    assert "fix: run retention" in done.stdout
    assert line(done.stdout, "ClickHouse").startswith("ok"), done.stdout

    missing = doctor("--video-store-block", "no-such-store")
    assert line(missing.stdout, "video store").startswith("FAIL"), missing.stdout


def test_each_fault_is_named_with_its_fix_and_no_secret(stack):
    from blocks.clickhouse import ClickHouseSink
    from blocks.model_server import TFServingModel

    spec = load_spec(stack.data_dir / "stack" / "simulator.json")
    ports = {r.name: r.port for r in spec.recorders}
    ClickHouseSink(url=stack.clickhouse_url, password=SecretStr("not-the-Pa55word")).save(
        "doctor-bad-pw", overwrite=True
    )
    TFServingModel.load("nvrflow").model_copy(update={"input_size": 160}).save(
        "doctor-mismatch", overwrite=True
    )
    control.set_faults(ports["nvr-02"], wrong_password=True)
    control.set_faults(ports["nvr-03"], offline=True)
    try:
        done = doctor("--sink-block", "doctor-bad-pw", "--model-block", "doctor-mismatch")
    finally:
        control.reset_faults(ports["nvr-02"])
        control.reset_faults(ports["nvr-03"])
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert line(out, "recorder nvr-01").startswith("ok"), out
    assert line(out, "recorder nvr-02").startswith("FAIL") and "wrong credentials" in line(
        out, "recorder nvr-02"
    )
    assert line(out, "recorder nvr-03").startswith("FAIL"), out
    assert line(out, "ClickHouse").startswith("FAIL") and "refused" in line(out, "ClickHouse"), out
    assert line(out, "model server").startswith("FAIL") and "input_size 160" in line(out, "model server"), out
    assert out.count("fix:") >= 4, out
    assert "not-the-Pa55word" not in out + done.stderr
    assert stack.recorder_password not in out + done.stderr
    assert out.strip().splitlines()[-1].endswith("failed")


@pytest.fixture
def small_data_folder(tmp_path):
    """A 1 MiB tmpfs, to be the data folder of a machine short of space; unmounted afterwards."""
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True, timeout=30)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True, timeout=30)


def test_a_clock_off_a_missing_channel_and_a_full_disk_each_fail_with_their_fix(stack, small_data_folder):
    from blocks.recorder import HikvisionRecorder

    spec = load_spec(stack.data_dir / "stack" / "simulator.json")
    device = next(r for r in spec.recorders if r.name == "nvr-02")
    has = [c.id for c in device.channels]
    # A block naming a channel the device lacks (disabled: no run of other tests picks it up).
    HikvisionRecorder(
        host="127.0.0.1", port=device.port, username=device.username, password=SecretStr(device.password),
        channels=[*has, 9], enabled=False,
    ).save("doctor-channels", overwrite=True)  # fmt: skip
    nvr01 = next(r.port for r in spec.recorders if r.name == "nvr-01")
    control.set_faults(nvr01, clock_offset_s=600)
    try:
        done = doctor(
            "--recorder",
            "doctor-channels",
            "--min-free-gib",
            "1",
            env={"NVRFLOW_DATA": str(small_data_folder)},
        )
    finally:
        control.reset_faults(nvr01)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr

    clock = line(out, "recorder nvr-01")
    off = re.search(r"clock \+(\d+) s off UTC", clock)
    assert clock.startswith("FAIL") and off and 590 <= int(off[1]) <= 600, (
        out
    )  # read a moment after it was set
    assert fix(out, "recorder nvr-01").startswith("set the recorder's time (NTP)"), out

    channels = line(out, "recorder doctor-channels")
    assert (
        channels.startswith("FAIL")
        and f"channels [9] of the block not on the device (it has {has})" in channels
    )
    assert "fix `channels` in the inventory and run sync-inventory" in fix(out, "recorder doctor-channels"), (
        out
    )

    space = line(out, "data folder")
    assert space.startswith(f"FAIL  data folder: {small_data_folder}: 0.0 GiB free (under 1 GiB)"), out
    assert fix(out, "data folder") == "free space or point NVRFLOW_DATA at a larger disk", out

    # The rest of the machine is sound: only these three fail.
    assert line(out, "recorder nvr-02").startswith("ok") and line(out, "ClickHouse").startswith("ok"), out
    assert out.strip().splitlines()[-1].endswith("3 failed"), out
