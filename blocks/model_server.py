"""TF Serving model block: the only place that speaks TF Serving's gRPC API.

A block serves one of two kinds of model. A classifier answers top-k labels per frame. A
detector has the TF Object Detection API's serving signature (uint8 `images` [N, S, S, 3] in;
`detection_boxes` [N, K, 4] normalised (ymin, xmin, ymax, xmax), `detection_scores` [N, K],
`detection_classes` [N, K] as 1-based class ids, `num_detections` [N] out) and answers, per image,
the boxes of the tracked labels that pass the score threshold.

Importing this module is cheap; grpc and tensorflow-serving-api's messages are imported by
`connect()`, so flows that never classify never pay for them, and TensorFlow itself is never
loaded (`blocks/tf_serving_protos.py`).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

import numpy as np
from prefect.blocks.core import Block
from pydantic import Field

from core.errors import ServiceError

MESSAGE_LIMIT = 64 * 1024 * 1024
IN_FLIGHT = 2  # Predict calls outstanding in classify_batches: one on the model, the next one queued
T = TypeVar("T")
R = TypeVar("R")
# The TF Object Detection API's outputs, all a detector is asked for.
DETECTOR_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
# COCO's people and vehicles: what operators search footage for.
TRACKED_LABELS = ("person", "bicycle", "car", "motorcycle", "bus", "truck")
NormalisedBox = tuple[float, float, float, float]  # x0, y0, x1, y1 as shares of the image's width and height
Found = tuple[str, float, NormalisedBox]  # a detector's answer: label, score, box
# gRPC codes of faults that pass: the server restarting or overloaded, a deadline missed.
_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
_ARRAYS = {  # TF DataType enum name -> numpy dtype of tensor_content and the repeated field of values
    "DT_FLOAT": ("<f4", "float_val"),
    "DT_INT32": ("<i4", "int_val"),
    "DT_INT64": ("<i8", "int64_val"),
}
_DTYPES = {  # numpy dtype name -> TF DataType enum name
    "uint8": "DT_UINT8",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "float16": "DT_HALF",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
}


class ModelServerError(ServiceError):
    """The model server failed a call; retryable when its gRPC code says the fault passes."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code
        self.retryable = code in _RETRYABLE

    def __reduce__(self):  # Prefect pickles a failed task's exception
        return (type(self), (str(self), self.code))


class ModelMismatch(ServiceError):
    """The served model does not match the block's settings: retrying cannot help."""

    retryable = False


class TFServingModel(Block):
    """A model on TensorFlow Serving (or the stack's compatible server): a classifier of frames, or
    a detector of objects in them."""

    _block_type_name = "TF Serving Model"
    _description = (
        "An image classifier or object detector served by TensorFlow Serving over gRPC, and how to call it."
    )

    target: str = Field(default="127.0.0.1:8500", description="host:port of the gRPC API.")
    model_name: str = Field(description="Model name as configured in TF Serving.")
    model_version: int | None = Field(default=None, description="Pin a version; empty serves the latest.")
    kind: Literal["classifier", "detector"] = Field(
        default="classifier",
        description="classifier: top-k labels per frame (output_name). detector: boxes, with the TF Object "
        "Detection API's outputs (detection_boxes, detection_scores, detection_classes, num_detections).",
    )
    signature_name: str = "serving_default"
    input_name: str = "images"
    output_name: str = "probabilities"
    input_size: int = Field(default=224, description="Frames are input_size x input_size RGB.")
    input_dtype: str = "uint8"
    labels: list[str] = Field(
        default_factory=list,
        description="Class names, index -> name. A detector's class id i is labels[i - 1] "
        "(its 1-based ids: line i of a labels.txt is id i).",
    )
    score_threshold: float = Field(
        default=0.33, ge=0.0, le=1.0, description="Detector: a box scored at least this can start an object."
    )
    follow_threshold: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="Detector: a box scored from this up to score_threshold only follows an object "
        "already seen (a small person standing still scores lower than walking); boxes under both "
        "are dropped.",
    )
    tracked_labels: list[str] = Field(
        default_factory=lambda: list(TRACKED_LABELS),
        description="Detector: the labels kept; boxes of other labels are dropped.",
    )
    batch_size: int = Field(
        default=16, ge=1, description="Frames per Predict call; `make bench-classify` measures the choices."
    )
    top_k: int = Field(default=5, ge=1)
    timeout_seconds: float = Field(default=30.0, gt=0, description="Deadline of each gRPC call.")

    def connect(self) -> ModelClient:
        """A client with an open channel; use as a context manager, or call close()."""
        return ModelClient(self)

    def output_settings(self) -> dict[str, object]:
        """What shapes the labels a frame gets: part of the classify cache key and the rows' tokens.

        The served version is added by the caller (it is what the server answers, not a setting).
        """
        if self.kind == "detector":
            return {
                "kind": self.kind,
                "model": self.model_name,
                "signature": self.signature_name,
                "input": [self.input_name, self.input_size, self.input_dtype],
                "labels": hashlib.sha256("\n".join(self.labels).encode()).hexdigest()[:16],
                "score_threshold": self.score_threshold,
                "follow_threshold": self.follow_threshold,
                "tracked_labels": sorted(self.tracked_labels),
            }
        return {
            "model": self.model_name,
            "signature": self.signature_name,
            "input": [self.input_name, self.input_size, self.input_dtype],
            "output": self.output_name,
            "labels": hashlib.sha256("\n".join(self.labels).encode()).hexdigest()[:16],
            "top_k": self.top_k,
        }


class ModelClient:
    """One gRPC channel to the model server, bound to one block's settings."""

    def __init__(self, model: TFServingModel) -> None:
        import grpc

        from blocks import tf_serving_protos

        if model.input_dtype not in _DTYPES:
            raise ValueError(f"input_dtype {model.input_dtype!r} not supported; one of {sorted(_DTYPES)}")
        protos = tf_serving_protos.load()
        self.model = model
        self._grpc = grpc
        self._types_pb2 = protos["types"]
        self._metadata_pb2 = protos["metadata"]
        self._predict_pb2 = protos["predict"]
        prediction_service_pb2_grpc = protos["service"]
        self._channel = grpc.insecure_channel(
            model.target,
            options=[
                ("grpc.max_send_message_length", MESSAGE_LIMIT),
                ("grpc.max_receive_message_length", MESSAGE_LIMIT),
            ],
        )
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._version: int | None = None

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    @property
    def input_size(self) -> int:
        """Side of the square images the model takes."""
        return self.model.input_size

    @property
    def batch_size(self) -> int:
        """Most images one Predict call carries."""
        return self.model.batch_size

    @property
    def score_threshold(self) -> float:
        """Detector: the least score of a box that starts an object (weaker ones only follow)."""
        return self.model.score_threshold

    @property
    def version(self) -> int:
        """The model version the server answers with (asked for once if not known yet)."""
        if self._version is None:
            self._version = self._metadata_version()
        return self._version

    def _model_spec(self, spec) -> None:
        spec.name = self.model.model_name
        spec.signature_name = self.model.signature_name
        if self.model.model_version is not None:
            spec.version.value = self.model.model_version

    def _call(self, method: str, request) -> Any:
        """One RPC with a deadline. No retry here: the task's retry policy decides (ModelServerError.retryable)."""
        return self._result(method, self._start(method, request))

    def _start(self, method: str, request) -> Any:
        """The RPC sent, with a deadline; its answer is had with `_result`."""
        return getattr(self._stub, method).future(request, timeout=self.model.timeout_seconds)

    def _result(self, method: str, call) -> Any:
        try:
            return call.result()
        except self._grpc.RpcError as exc:
            code = getattr(exc.code(), "name", "UNKNOWN")  # a closed channel may give no code
            raise ModelServerError(
                f"model {self.model.model_name} at {self.model.target}: {method} failed: {code}: {exc.details() or ''}",
                code,
            ) from None

    def _metadata(self):
        request = self._metadata_pb2.GetModelMetadataRequest()
        self._model_spec(request.model_spec)
        request.model_spec.ClearField("signature_name")
        request.metadata_field.append("signature_def")
        return self._call("GetModelMetadata", request)

    def _metadata_version(self) -> int:
        return int(self._metadata().model_spec.version.value)

    def check_metadata(self) -> int:
        """Compare the served signature with the block's settings; the version served.

        Raises ModelMismatch naming the model, the setting, and expected vs actual.
        """
        response = self._metadata()
        self._version = int(response.model_spec.version.value)
        signatures = self._metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        m = self.model
        where = f"model {m.model_name} v{self._version} at {m.target}"
        if m.signature_name not in signatures.signature_def:
            raise ModelMismatch(
                f"{where}: signature_name expected {m.signature_name!r}, "
                f"served {sorted(signatures.signature_def)}"
            )
        signature = signatures.signature_def[m.signature_name]
        if m.input_name not in signature.inputs:
            raise ModelMismatch(
                f"{where}: input_name expected {m.input_name!r}, served {sorted(signature.inputs)}"
            )
        if m.kind == "detector":
            missing = [name for name in DETECTOR_OUTPUTS if name not in signature.outputs]
            if missing:
                raise ModelMismatch(
                    f"{where}: kind 'detector' expects the outputs {list(DETECTOR_OUTPUTS)}, "
                    f"served {sorted(signature.outputs)} (a classifier?)"
                )
        elif m.output_name not in signature.outputs:
            raise ModelMismatch(
                f"{where}: output_name expected {m.output_name!r}, served {sorted(signature.outputs)}"
            )
        served_input = signature.inputs[m.input_name]
        served_dtype = self._types_pb2.DataType.Name(served_input.dtype)
        if m.kind == "detector" and served_dtype != "DT_UINT8":
            raise ModelMismatch(
                f"{where}: kind 'detector' expects a DT_UINT8 image input, served {served_dtype}"
            )
        if served_dtype != _DTYPES[m.input_dtype]:
            raise ModelMismatch(
                f"{where}: input_dtype expected {_DTYPES[m.input_dtype]}, served {served_dtype}"
            )
        dims = [d.size for d in served_input.tensor_shape.dim]
        wanted = [-1, m.input_size, m.input_size, 3]
        if (
            served_input.tensor_shape.unknown_rank
            or len(dims) != 4
            or any(d != -1 and d != w for d, w in zip(dims[1:], wanted[1:], strict=True))
        ):
            raise ModelMismatch(
                f"{where}: input_size {m.input_size} expects input shape {wanted}, served {dims}"
            )
        if m.kind == "detector":
            self._check_label_map(where)
            return self._version
        out_dims = [d.size for d in signature.outputs[m.output_name].tensor_shape.dim]
        if m.labels and out_dims and out_dims[-1] not in (-1, len(m.labels)):
            raise ModelMismatch(
                f"{where}: labels has {len(m.labels)} names, output {m.output_name!r} has {out_dims[-1]} classes"
            )
        return self._version

    def _check_label_map(self, where: str) -> None:
        """A detector answers class ids: without the label map, or with tracked labels it does not
        name (a typo), every box would be dropped without a word."""
        m = self.model
        if not m.labels:
            raise ModelMismatch(
                f"{where}: labels is empty: a detector needs its label map (line i is class id i)"
            )
        unknown = sorted(set(m.tracked_labels) - set(m.labels))
        if unknown:
            raise ModelMismatch(f"{where}: tracked_labels {unknown} are not in the model's labels")

    def _array(self, response, name: str) -> np.ndarray:
        """An output of the response as a numpy array (float32, int32 or int64 tensors)."""
        proto = response.outputs[name]
        dtype = self._types_pb2.DataType.Name(proto.dtype)
        if dtype not in _ARRAYS:
            raise ModelServerError(
                f"model {self.model.model_name}: output {name!r} is {dtype}, expected one of {sorted(_ARRAYS)}",
                "INVALID_ARGUMENT",
            )
        numpy_dtype, field = _ARRAYS[dtype]
        if proto.tensor_content:
            values = np.frombuffer(proto.tensor_content, dtype=numpy_dtype)
        else:
            values = np.asarray(getattr(proto, field), dtype=numpy_dtype)
        return values.reshape([d.size for d in proto.tensor_shape.dim])

    def _probabilities(self, response) -> np.ndarray:
        name = self.model.output_name
        if response.outputs[name].dtype != self._types_pb2.DT_FLOAT:
            raise ModelServerError(
                f"model {self.model.model_name}: output {name!r} is "
                f"{self._types_pb2.DataType.Name(response.outputs[name].dtype)}, expected DT_FLOAT",
                "INVALID_ARGUMENT",
            )
        return self._array(response, name)

    def _label(self, index: int) -> str:
        labels = self.model.labels
        return labels[index] if index < len(labels) else str(index)

    def _check_frames(self, frames: np.ndarray) -> np.ndarray:
        m = self.model
        frames = np.asarray(frames)
        want = (m.input_size, m.input_size, 3)
        if frames.ndim != 4 or frames.shape[1:] != want:
            raise ValueError(f"frames must be [N, {want[0]}, {want[1]}, 3], got {list(frames.shape)}")
        if frames.dtype != np.dtype(m.input_dtype):
            raise ValueError(f"frames must be {m.input_dtype}, got {frames.dtype}")
        return frames

    def _require(self, kind: str, method: str) -> None:
        if self.model.kind != kind:
            raise ValueError(f"model {self.model.model_name} is a {self.model.kind}: {method} needs a {kind}")

    def _predict_request(self, batch: np.ndarray):
        """The Predict request, its input tensor filled in place from the array's bytes (no TensorProto copied in)."""
        request = self._predict_pb2.PredictRequest()
        self._model_spec(request.model_spec)
        tensor = request.inputs[self.model.input_name]
        tensor.dtype = self._types_pb2.DataType.Value(_DTYPES[self.model.input_dtype])
        for n in batch.shape:
            tensor.tensor_shape.dim.add(size=int(n))
        tensor.tensor_content = np.ascontiguousarray(batch).tobytes()
        if self.model.kind == "detector":
            request.output_filter.extend(DETECTOR_OUTPUTS)
        else:
            request.output_filter.append(self.model.output_name)
        return request

    def _top_k(self, response, rows: int) -> list[list[tuple[str, float]]]:
        m = self.model
        self._version = int(response.model_spec.version.value)
        probabilities = self._probabilities(response)
        if probabilities.ndim != 2 or probabilities.shape[0] != rows:
            raise ModelServerError(
                f"model {m.model_name}: output shape {list(probabilities.shape)} for a batch of {rows}",
                "INVALID_ARGUMENT",
            )
        k = min(m.top_k, probabilities.shape[1])
        best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [
            [(self._label(int(i)), float(row[i])) for i in top]
            for row, top in zip(probabilities, best, strict=True)
        ]

    def _found(self, response, rows: int) -> list[list[Found]]:
        """Per image, the boxes of tracked labels scored at least the lower of the two
        thresholds, best first."""
        m = self.model
        self._version = int(response.model_spec.version.value)
        boxes, scores, classes, counts = (self._array(response, name) for name in DETECTOR_OUTPUTS)
        if (
            boxes.ndim != 3
            or boxes.shape[0] != rows
            or boxes.shape[2] != 4
            or scores.shape != boxes.shape[:2]
            or classes.shape != boxes.shape[:2]
            or counts.shape != (rows,)
        ):
            raise ModelServerError(
                f"model {m.model_name}: detector outputs of shapes {list(boxes.shape)}, {list(scores.shape)}, "
                f"{list(classes.shape)}, {list(counts.shape)} for a batch of {rows}",
                "INVALID_ARGUMENT",
            )
        tracked = set(m.tracked_labels)
        least = min(m.score_threshold, m.follow_threshold)
        answers: list[list[Found]] = []
        for row in range(rows):
            found: list[Found] = []
            for k in range(min(int(counts[row]), boxes.shape[1])):
                score = float(scores[row, k])
                label = self._label(int(round(float(classes[row, k]))) - 1)
                if score < least or label not in tracked:
                    continue
                ymin, xmin, ymax, xmax = np.clip(boxes[row, k].astype(np.float64), 0.0, 1.0)
                if xmax > xmin and ymax > ymin:
                    found.append((label, score, (float(xmin), float(ymin), float(xmax), float(ymax))))
            answers.append(sorted(found, key=lambda f: -f[1]))
        return answers

    def classify(self, frames: np.ndarray) -> list[list[tuple[str, float]]]:
        """Top-k (label, score) for each frame of a uint8 [N, H, W, 3] array, in order."""
        self._require("classifier", "classify")
        frames = self._check_frames(frames)
        results: list[list[tuple[str, float]]] = []
        for start in range(0, len(frames), self.model.batch_size):
            batch = frames[start : start + self.model.batch_size]
            results += self._top_k(self._call("Predict", self._predict_request(batch)), len(batch))
        return results

    def classify_batches(
        self, batches: Iterable[tuple[T, np.ndarray]]
    ) -> Iterator[tuple[T, list[list[tuple[str, float]]]]]:
        """Top-k of each (tag, frames) batch, in order, with IN_FLIGHT Predict calls outstanding.

        The next batch is on its way while the server runs the model on this one, so the server
        never waits for the client to read an answer and send the next request. Each batch is
        one call: batches must not hold more than the block's batch_size frames.
        """
        self._require("classifier", "classify_batches")
        return self._in_flight(batches, self._top_k)

    def detect_batches(
        self, batches: Iterable[tuple[T, np.ndarray]]
    ) -> Iterator[tuple[T, list[list[Found]]]]:
        """Each (tag, images) batch's detections, in order, with IN_FLIGHT Predict calls outstanding.

        Per image, a list of (label, score, (x0, y0, x1, y1)): the box as shares of the image's
        width and height (the model's (ymin, xmin, ymax, xmax) reordered to x first), only tracked
        labels scored at least follow_threshold (or score_threshold, if lower), best first. Each
        batch is one call: batches must not hold more than the block's batch_size images. The
        source is read one batch ahead of the answers: what it yields next may depend on every
        answer but the last one sent.
        """
        self._require("detector", "detect_batches")
        return self._in_flight(batches, self._found)

    def _in_flight(
        self, batches: Iterable[tuple[T, np.ndarray]], answer: Callable[[Any, int], R]
    ) -> Iterator[tuple[T, R]]:
        pending: deque[tuple[T, int, Any]] = deque()
        try:
            for tag, frames in batches:
                frames = self._check_frames(frames)
                if len(frames) > self.model.batch_size:
                    raise ValueError(
                        f"a batch of {len(frames)} frames, batch_size is {self.model.batch_size}"
                    )
                pending.append((tag, len(frames), self._start("Predict", self._predict_request(frames))))
                if len(pending) >= IN_FLIGHT:
                    tag, rows, call = pending.popleft()
                    yield tag, answer(self._result("Predict", call), rows)
            while pending:
                tag, rows, call = pending.popleft()
                yield tag, answer(self._result("Predict", call), rows)
        finally:
            for _tag, _rows, call in pending:  # stopped early or failed: nothing left running
                call.cancel()
