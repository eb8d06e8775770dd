"""hikload 1.1.4, unmodified, in a venv of its own under `cache_dir()/hikload-venv`.

hikload pins a desktop stack (PyQt5, pefile, pywin32-ctypes) that only its optional Qt UI
uses, and `lxml==4.9.1`, which has no wheel for Python 3.11. So it is installed with
`--no-deps` next to the runtime dependencies its CLI imports (requests, lxml, xmler,
ffmpeg-python, tqdm), at the versions it pins wherever those install on 3.11, wheels only.
The venv is made once; later calls only check a stamp.

`python -m bench.hikload_env` prints the interpreter's path.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from stack.paths import cache_dir

HIKLOAD_VERSION = "1.1.4"
# hikload's own pins, except lxml (4.9.4: first 4.9.x with 3.11 wheels) and future (1.0.0: 0.18.2 is
# an sdist only); certifi is unpinned as hikload only ever talks plain HTTP here.
REQUIREMENTS = (
    f"hikload=={HIKLOAD_VERSION}",
    "requests==2.28.1",
    "urllib3==1.26.10",
    "idna==3.3",
    "charset-normalizer==2.1.0",
    "certifi",
    "lxml==4.9.4",
    "xmler==0.2.0",
    "ffmpeg-python==0.2.0",
    "future==1.0.0",
    "tqdm==4.64.0",
)
VENV_TIMEOUT_S = 120
PIP_TIMEOUT_S = 600
SMOKE_TIMEOUT_S = 60
STAMP = ".nvrflow-stamp"


def venv_dir() -> Path:
    return cache_dir() / "hikload-venv"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _stamp_text() -> str:
    wanted = "\n".join(REQUIREMENTS) + f"\n{sys.version_info[:2]}\n"
    return hashlib.sha256(wanted.encode()).hexdigest()


def _run(args: list[str], timeout: float) -> None:
    # Argument lists made of constants and our own paths.
    result = subprocess.run(args, capture_output=True, timeout=timeout, check=False)  # noqa: S603
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).decode(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(args[:4])} ... failed ({result.returncode}):\n{tail}")


def _ready(venv: Path) -> bool:
    stamp = venv / STAMP
    return _python(venv).exists() and stamp.exists() and stamp.read_text().strip() == _stamp_text()


def ensure_hikload() -> Path:
    """Path of the Python interpreter of hikload's venv, creating the venv if it is missing or stale."""
    venv = venv_dir()
    if _ready(venv):
        return _python(venv)
    lock_path = venv.with_name(venv.name + ".lock")
    with lock_path.open("w") as lock:
        # Two test sessions may start at once; the second waits, then finds the venv ready.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ready(venv):
            return _python(venv)
        # A venv cannot be moved after creation, so a half-built one is removed and rebuilt in place.
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)], VENV_TIMEOUT_S)
        pip = [str(_python(venv)), "-m", "pip", "--disable-pip-version-check", "--timeout", "60"]
        _run([*pip, "install", "-q", "--only-binary=:all:", "--no-deps", *REQUIREMENTS], PIP_TIMEOUT_S)
        # The CLI must import: this is where a missing runtime dependency would show.
        _run([str(_python(venv)), "-m", "hikload", "--help"], SMOKE_TIMEOUT_S)
        (venv / STAMP).write_text(_stamp_text() + "\n")
    return _python(venv)


if __name__ == "__main__":
    print(ensure_hikload())
