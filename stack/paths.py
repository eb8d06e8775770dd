"""Where the stack keeps its data and where downloads and models are cached."""

from __future__ import annotations

import os
from pathlib import Path

from core.settings import data_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["PROJECT_ROOT", "cache_dir", "data_dir"]


def cache_dir() -> Path:
    """Downloads, generated footage and converted models: outside the clone, reused across clones."""
    root = Path(os.environ.get("NVRFLOW_CACHE", Path.home() / ".cache" / "nvrflow"))
    root.mkdir(parents=True, exist_ok=True)
    return root
