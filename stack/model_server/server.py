"""The model server's gRPC services: TensorFlow Serving's API over SavedModels on disk.

It loads every numeric version folder of a model in TF Serving's `<base>/<version>/`
layout, serves the highest version by default and any loaded version on request, and
answers `PredictionService.Predict`, `PredictionService.GetModelMetadata` and
`ModelService.GetModelStatus` with TF Serving's messages and status codes, so a client
written for TF Serving works against it unchanged.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from stack.model_server.batching import DEFAULT_BATCH_TIMEOUT_MS, Batching, RunModel  # noqa: E402
from stack.ports import HOST  # noqa: E402

log = logging.getLogger("model_server")

MESSAGE_LIMIT = 64 * 1024 * 1024
DEFAULT_SIGNATURE = "serving_default"
INIT_OP_SIGNATURE = "__saved_model_init_op"
GRACE_SECONDS = 5.0


class ServingError(Exception):
    """A request fault, reported to the client with a gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Servable:
    version: int
    loaded: object  # the restored SavedModel: owns the variables the signatures use
    signatures: dict  # signature name -> concrete function
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]  # as stored in saved_model.pb


def _read_signature_defs(version_dir: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    defs = saved_model.meta_graphs[0].signature_def
    return {name: defs[name] for name in defs if name != INIT_OP_SIGNATURE}


def load_servables(base_path: Path) -> dict[int, Servable]:
    """Every numeric version folder under base_path, loaded; other entries are ignored."""
    versions = sorted(int(p.name) for p in base_path.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise FileNotFoundError(f"no numeric version folder under {base_path}")
    servables: dict[int, Servable] = {}
    for version in versions:
        version_dir = base_path / str(version)
        loaded = tf.saved_model.load(str(version_dir))
        servable = Servable(version, loaded, dict(loaded.signatures), _read_signature_defs(version_dir))
        servables[version] = servable
        log.info(
            "loaded version %d from %s: signatures %s", version, version_dir, sorted(servable.signature_defs)
        )
    return servables


class ModelRepository:
    """The loaded versions of each model served, looked up as TF Serving does."""

    def __init__(self, models: dict[str, dict[int, Servable]], max_batch: int) -> None:
        self.models = models
        self.max_batch = max_batch

    def versions(self, model_spec) -> dict[int, Servable]:
        if model_spec.name not in self.models:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {model_spec.name}"
            )
        return self.models[model_spec.name]

    def find(self, model_spec) -> Servable:
        specific = model_spec.HasField("version")
        servables = self.models.get(model_spec.name, {})
        if not servables or (specific and model_spec.version.value not in servables):
            request = (
                f"Specific({model_spec.name}, {model_spec.version.value})"
                if specific
                else f"Latest({model_spec.name})"
            )
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")
        if model_spec.version_label:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"version labels are not configured for model {model_spec.name}: {model_spec.version_label}",
            )
        return servables[model_spec.version.value if specific else max(servables)]

    def signature(self, servable: Servable, signature_name: str):
        name = signature_name or DEFAULT_SIGNATURE
        if name not in servable.signature_defs:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.'
            )
        return name, servable.signatures[name], servable.signature_defs[name]


def _dtype_string(dtype: types_pb2.DataType.ValueType) -> str:
    """TF's own spelling (DT_FLOAT -> "float"), as in TF Serving's messages."""
    return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()


def _check_inputs(
    request, signature_def: meta_graph_pb2.SignatureDef, max_batch: int
) -> dict[str, np.ndarray]:
    expected = set(signature_def.inputs)
    sent = set(request.inputs)
    for alias in sorted(sent):
        if alias not in expected:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input tensor alias not found in signature: {alias}. "
                f"Inputs expected to be in the set {{{','.join(sorted(expected))}}}.",
            )
    if sent != expected:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}.",
        )
    arrays: dict[str, np.ndarray] = {}
    for alias in sorted(expected):
        proto = request.inputs[alias]
        info = signature_def.inputs[alias]
        if proto.dtype != info.dtype:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expects arg '{alias}' to be {_dtype_string(info.dtype)} but {_dtype_string(proto.dtype)} is provided",
            )
        try:
            array = tf.make_ndarray(proto)
        except (TypeError, ValueError) as exc:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"input '{alias}' is malformed: {exc}"
            ) from exc
        # TensorShape takes a TensorShapeProto too; types-tensorflow's stub leaves that out.
        want = tf.TensorShape(info.tensor_shape)  # type: ignore[arg-type]
        if not want.is_compatible_with(array.shape):
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{alias}' has shape {list(array.shape)}, incompatible with the signature's "
                f"{[d if d is not None else -1 for d in want.as_list()]}",
            )
        if array.ndim and array.shape[0] > max_batch:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Task size {array.shape[0]} is larger than maximum input batch size {max_batch}",
            )
        arrays[alias] = array
    return arrays


def _first_cause(exc: BaseException) -> str:
    """The line of a TF error that says what went wrong, without the Python traceback TF adds."""
    text = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    noise = ("Graph execution error", "Detected at node", "File ", "<stack traces", "[[{{node")
    causes = [line for line in lines if not line.startswith(noise)]
    return (causes or lines or [type(exc).__name__])[0]


def _serving_error(exc: BaseException) -> ServingError:
    """TF Serving's status for a failure inside the model call."""
    if isinstance(exc, tf.errors.InvalidArgumentError | ValueError | TypeError):
        return ServingError(grpc.StatusCode.INVALID_ARGUMENT, _first_cause(exc))
    if isinstance(exc, TimeoutError):
        return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}".splitlines()[0])


def _model_runner(function) -> RunModel:
    """Call a signature on numpy inputs; numpy outputs, keyed by output alias."""

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = function(**{alias: tf.constant(a) for alias, a in inputs.items()})
        return {alias: tensor.numpy() for alias, tensor in outputs.items()}

    return run


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repository: ModelRepository, batching: Batching) -> None:
        self.repository = repository
        self.batching = batching

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        try:
            with self.batching.receiving() as intake:
                servable = self.repository.find(request.model_spec)
                name, function, signature_def = self.repository.signature(
                    servable, request.model_spec.signature_name
                )
                arrays = _check_inputs(request, signature_def, self.repository.max_batch)
                wanted = list(request.output_filter) or list(signature_def.outputs)
                for alias in wanted:
                    if alias not in signature_def.outputs:
                        raise ServingError(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                            f"the set {{{','.join(sorted(signature_def.outputs))}}}.",
                        )
                try:
                    job = intake.submit(
                        (request.model_spec.name, servable.version, name),
                        _model_runner(function),  # the lane keeps the first one it is given
                        arrays,
                        is_active=context.is_active,
                        wait_s=context.time_remaining(),
                    )
                except TimeoutError as exc:
                    raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from exc
                except RuntimeError as exc:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
            if job.error is not None:
                raise _serving_error(job.error)
        except ServingError as exc:
            log.warning("Predict %s: %s %s", request.model_spec.name, exc.code.name, exc.message)
            context.abort(exc.code, exc.message)
        outputs = job.outputs
        assert outputs is not None, "a job finishes with outputs or with an error"
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = name
        for alias in wanted:
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias]))
        log.debug(
            "Predict %s v%d: %s",
            request.model_spec.name,
            servable.version,
            {a: x.shape for a, x in arrays.items()},
        )
        return response

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        try:
            servable = self.repository.find(request.model_spec)
            if not request.metadata_field:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "GetModelMetadataRequest must specify at least one metadata_field",
                )
            for field in request.metadata_field:
                if field != "signature_def":
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported"
                    )
        except ServingError as exc:
            context.abort(exc.code, exc.message)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        try:
            servables = self.repository.versions(spec)
        except ServingError as exc:
            context.abort(exc.code, exc.message)
        if spec.HasField("version"):
            if spec.version.value not in servables:
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {spec.version.value} of model {spec.name}",
                )
            versions = [spec.version.value]
        else:
            versions = sorted(servables, reverse=True)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in versions:
            status = response.model_version_status.add()
            status.version = version
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            status.status.SetInParent()  # TF Serving sends an OK status with each version
        return response


def make_server(
    repository: ModelRepository,
    port: int,
    workers: int = 4,
    batching: Batching | None = None,
    host: str = HOST,
) -> grpc.Server:
    """The gRPC server; `batching` merges concurrent Predict calls (by default with a 2 ms wait)."""
    batching = batching or Batching(repository.max_batch, DEFAULT_BATCH_TIMEOUT_MS / 1000)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict"),
        options=[
            ("grpc.max_send_message_length", MESSAGE_LIMIT),
            ("grpc.max_receive_message_length", MESSAGE_LIMIT),
            ("grpc.so_reuseport", 0),  # a port in use must fail to bind, not be shared
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(repository, batching), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(repository), server)
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    if bound != port:
        raise OSError(f"cannot listen on {address}: port in use")
    return server


def run(
    models: dict[str, Path],
    port: int,
    max_batch: int,
    workers: int,
    stop: threading.Event,
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS,
    stats_file: Path | None = None,
    host: str = HOST,
) -> int:
    """Load the models ({name: base path}), serve until `stop` is set, then drain in-flight calls; an
    exit status."""
    try:
        repository = ModelRepository({name: load_servables(path) for name, path in models.items()}, max_batch)
        batching = Batching(max_batch, batch_timeout_ms / 1000, stats_file)
        server = make_server(repository, port, workers, batching, host)
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    server.start()
    for name, servables in repository.models.items():
        log.info("serving model %s versions %s on %s:%d", name, sorted(servables), host, port)
    stop.wait()
    log.info("stopping")
    server.stop(GRACE_SECONDS).wait()
    batching.close()
    log.info("batching: %s", batching.stats.as_dict())
    return 0
