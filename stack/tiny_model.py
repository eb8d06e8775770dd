"""Tiny SavedModels with the classifier's and the detector's signatures, quick to make at test
time, and a helper that serves a model folder with `stack.model_server` on a free port.

Classifier, `serving_default`: `images` uint8 [None, S, S, 3] RGB -> `probabilities` float32
[None, num_classes]. The logits are the mean red, green and blue of the frame (0..1)
times a per-version sharpness, so a pure red, green or blue frame is classified as
"red", "green" or "blue", and the score tells which version answered.

Detector, `serving_default` with the TF Object Detection API's outputs: it finds the bright
pixels of each image (grey level above a threshold) and answers one box around all of them, of
class id 1 ("person"), scored by their mean brightness, or nothing when there are none. Bright
things on a dark scene are people to it: a real model and a real server whose answers a test
knows in advance.
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
# COCO's first class ids, in its order: the block's default tracked labels all have an id; the tiny
# detector answers id 1 only.
DETECTOR_LABELS = ("person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck")
DETECTOR_MAX_BOXES = 100
BRIGHT = 200  # grey level above which the tiny detector sees a pixel as part of a person


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


def make_tiny_detector(base_path: Path, image_size: int = 416, version: int = 1) -> list[str]:
    """Write `<base_path>/<version>/`, a SavedModel of the tiny detector; return the labels (line i is id i)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    class BrightBlobs(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")]
        )
        def serve(self, images):
            grey = tf.reduce_mean(tf.cast(images, tf.float32), axis=-1)  # [N, S, S]
            bright = grey > BRIGHT
            rows, cols = tf.reduce_any(bright, axis=2), tf.reduce_any(bright, axis=1)  # [N, S]
            found = tf.reduce_any(rows, axis=1)  # [N]
            index = tf.range(image_size, dtype=tf.float32)
            size = float(image_size)
            ymin = tf.reduce_min(tf.where(rows, index, size), axis=1)
            ymax = tf.reduce_max(tf.where(rows, index + 1, 0.0), axis=1)
            xmin = tf.reduce_min(tf.where(cols, index, size), axis=1)
            xmax = tf.reduce_max(tf.where(cols, index + 1, 0.0), axis=1)
            box = tf.stack([ymin, xmin, ymax, xmax], axis=1) / size  # [N, 4]
            count = tf.reduce_sum(tf.cast(bright, tf.float32), axis=[1, 2])
            score = tf.reduce_sum(tf.where(bright, grey, 0.0), axis=[1, 2]) / tf.maximum(count, 1.0) / 255.0
            found_f = tf.cast(found, tf.float32)
            pad = [[0, 0], [0, DETECTOR_MAX_BOXES - 1]]
            return {
                "detection_boxes": tf.pad(
                    (box * found_f[:, None])[:, None, :], [[0, 0], [0, DETECTOR_MAX_BOXES - 1], [0, 0]]
                ),
                "detection_scores": tf.pad((score * found_f)[:, None], pad),
                "detection_classes": tf.pad(found_f[:, None], pad),
                "num_detections": found_f,
            }

    module = BrightBlobs()
    tf.saved_model.save(module, str(base_path / str(version)), signatures={"serving_default": module.serve})
    (base_path / "labels.txt").write_text("\n".join(DETECTOR_LABELS) + "\n", encoding="utf-8")
    return list(DETECTOR_LABELS)


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
