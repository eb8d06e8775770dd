"""A tiny SavedModel with the classifier's signature, quick to make at test time,
and a helper that serves a model folder with `stack.model_server` on a free port.

`serving_default`: `images` uint8 [None, S, S, 3] RGB -> `probabilities` float32
[None, num_classes]. The logits are the mean red, green and blue of the frame (0..1)
times a per-version sharpness, so a pure red, green or blue frame is classified as
"red", "green" or "blue", and the score tells which version answered.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from stack.paths import PROJECT_ROOT
from stack.ports import HOST, free_port, wait_for_port
from stack.processes import terminate

COLOUR_LABELS = ("red", "green", "blue")


@dataclass
class ServedModel:
    port: int
    target: str
    process: subprocess.Popen
    stderr: IO[bytes]

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")


def sharpness(version: int) -> float:
    return 2.0 * version


def expected_probabilities(
    mean_rgb: tuple[float, float, float], version: int, num_classes: int = 3
) -> list[float]:
    """What the tiny model of that version answers for a frame of that mean colour (0..1)."""
    import math

    logits = [sharpness(version) * c for c in mean_rgb] + [0.0] * (num_classes - 3)
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    return [e / sum(exps) for e in exps]


def make_tiny_model(
    base_path: Path,
    versions: tuple[int, ...] = (1,),
    num_classes: int = 3,
    image_size: int = 32,
    input_dtype: str = "uint8",
) -> list[str]:
    """Write `<base_path>/<version>/` SavedModels; return the labels, index -> name.

    Pixel values are 0..255 whatever `input_dtype` is.
    """
    if num_classes < 3:
        raise ValueError("the tiny model needs at least the three colour classes")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    dtype = tf.as_dtype(input_dtype)

    class ColourClassifier(tf.Module):
        def __init__(self, version: int) -> None:
            super().__init__()
            weights = tf.eye(3, num_classes) * sharpness(version)
            self.weights = tf.Variable(weights, trainable=False, name="weights")

        @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], dtype, name="images")])
        def serve(self, images):
            mean_rgb = tf.reduce_mean(tf.cast(images, tf.float32) / 255.0, axis=[1, 2])
            return {"probabilities": tf.nn.softmax(tf.matmul(mean_rgb, self.weights))}

    for version in versions:
        module = ColourClassifier(version)
        tf.saved_model.save(
            module, str(base_path / str(version)), signatures={"serving_default": module.serve}
        )
    labels = list(COLOUR_LABELS) + [f"class_{i}" for i in range(3, num_classes)]
    (base_path / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return labels


@contextmanager
def serve(
    base_path: Path,
    model_name: str,
    max_batch: int = 32,
    timeout: float = 120.0,
    options: Sequence[str] = (),
) -> Iterator[ServedModel]:
    """Run `python -m stack.model_server` on a free loopback port until the block exits;
    `options` are more of its command-line options (`--workers 8`, ...)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [
        sys.executable, "-m", "stack.model_server",
        "--port", str(port),
        "--model-name", model_name,
        "--model-base-path", str(base_path),
        "--max-batch", str(max_batch),
        *options,
    ]  # fmt: skip
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(  # noqa: S603
            command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            wait_for_port(port, timeout, alive=lambda: process.poll() is None)
            yield ServedModel(port, f"{HOST}:{port}", process, stderr)
        finally:
            terminate(process)
