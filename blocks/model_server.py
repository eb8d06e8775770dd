"""TF Serving model block: the only place that speaks TF Serving's gRPC API.

Importing this module is cheap; grpc and tensorflow-serving-api's messages are imported by
`connect()`, so flows that never classify never pay for them, and TensorFlow itself is never
loaded (`blocks/tf_serving_protos.py`).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
from prefect.blocks.core import Block
from pydantic import Field

from core.errors import ServiceError

MESSAGE_LIMIT = 64 * 1024 * 1024
IN_FLIGHT = 2  # Predict calls outstanding in classify_batches: one on the model, the next one queued
T = TypeVar("T")
# gRPC codes of faults that pass: the server restarting or overloaded, a deadline missed.
_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
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
    """A model on TensorFlow Serving (or the stack's compatible server), used to classify frames."""

    _block_type_name = "TF Serving Model"
    _description = "An image classifier served by TensorFlow Serving over gRPC, and how to call it."

    target: str = Field(default="127.0.0.1:8500", description="host:port of the gRPC API.")
    model_name: str = Field(description="Model name as configured in TF Serving.")
    model_version: int | None = Field(default=None, description="Pin a version; empty serves the latest.")
    signature_name: str = "serving_default"
    input_name: str = "images"
    output_name: str = "probabilities"
    input_size: int = Field(default=224, description="Frames are input_size x input_size RGB.")
    input_dtype: str = "uint8"
    labels: list[str] = Field(default_factory=list, description="Class names, index -> name.")
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
        if m.output_name not in signature.outputs:
            raise ModelMismatch(
                f"{where}: output_name expected {m.output_name!r}, served {sorted(signature.outputs)}"
            )
        served_input = signature.inputs[m.input_name]
        served_dtype = self._types_pb2.DataType.Name(served_input.dtype)
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
        out_dims = [d.size for d in signature.outputs[m.output_name].tensor_shape.dim]
        if m.labels and out_dims and out_dims[-1] not in (-1, len(m.labels)):
            raise ModelMismatch(
                f"{where}: labels has {len(m.labels)} names, output {m.output_name!r} has {out_dims[-1]} classes"
            )
        return self._version

    def _probabilities(self, proto) -> np.ndarray:
        shape = [d.size for d in proto.tensor_shape.dim]
        if proto.dtype != self._types_pb2.DT_FLOAT:
            raise ModelServerError(
                f"model {self.model.model_name}: output {self.model.output_name!r} is "
                f"{self._types_pb2.DataType.Name(proto.dtype)}, expected DT_FLOAT",
                "INVALID_ARGUMENT",
            )
        if proto.tensor_content:
            values = np.frombuffer(proto.tensor_content, dtype="<f4")
        else:
            values = np.asarray(proto.float_val, dtype=np.float32)
        return values.reshape(shape)

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

    def _predict_request(self, batch: np.ndarray):
        """The Predict request, its input tensor filled in place from the array's bytes (no TensorProto copied in)."""
        request = self._predict_pb2.PredictRequest()
        self._model_spec(request.model_spec)
        tensor = request.inputs[self.model.input_name]
        tensor.dtype = self._types_pb2.DataType.Value(_DTYPES[self.model.input_dtype])
        for n in batch.shape:
            tensor.tensor_shape.dim.add(size=int(n))
        tensor.tensor_content = np.ascontiguousarray(batch).tobytes()
        request.output_filter.append(self.model.output_name)
        return request

    def _top_k(self, response, rows: int) -> list[list[tuple[str, float]]]:
        m = self.model
        self._version = int(response.model_spec.version.value)
        probabilities = self._probabilities(response.outputs[m.output_name])
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

    def classify(self, frames: np.ndarray) -> list[list[tuple[str, float]]]:
        """Top-k (label, score) for each frame of a uint8 [N, H, W, 3] array, in order."""
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
                    yield tag, self._top_k(self._result("Predict", call), rows)
            while pending:
                tag, rows, call = pending.popleft()
                yield tag, self._top_k(self._result("Predict", call), rows)
        finally:
            for _tag, _rows, call in pending:  # stopped early or failed: nothing left running
                call.cancel()
