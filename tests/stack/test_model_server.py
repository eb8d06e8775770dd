"""The stack's model server, called with the raw tensorflow-serving-api stubs as a TF Serving user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from stack.paths import PROJECT_ROOT  # noqa: E402
from stack.ports import is_listening  # noqa: E402
from stack.processes import terminate  # noqa: E402
from stack.tiny_model import expected_probabilities, make_tiny_model, serve  # noqa: E402

MODEL = "tiny"
LIMIT = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    make_tiny_model(base, versions=(1, 2))
    return base


@pytest.fixture(scope="module")
def server(tiny_base):
    with serve(tiny_base, MODEL) as served:
        yield served


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(
        server.target,
        options=[("grpc.max_send_message_length", LIMIT), ("grpc.max_receive_message_length", LIMIT)],
    )
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def colour_frames(size: int = 32, dtype=np.uint8) -> np.ndarray:
    frames = np.zeros((3, size, size, 3), dtype=dtype)
    for i in range(3):
        frames[i, ..., i] = 255
    return frames


def predict_request(frames: np.ndarray, name: str = MODEL, version: int | None = None, alias: str = "images"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = "serving_default"
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(frames))
    return request


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


def test_predict_serves_highest_version_by_default(predict_stub):
    response = predict_stub.Predict(predict_request(colour_frames()), timeout=10)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 3)
    for i, row in enumerate(probabilities):
        colour = tuple(1.0 if c == i else 0.0 for c in range(3))
        np.testing.assert_allclose(row, expected_probabilities(colour, version=2), rtol=1e-5)


def test_predict_honours_a_named_version(predict_stub):
    response = predict_stub.Predict(predict_request(colour_frames(), version=1), timeout=10)
    assert response.model_spec.version.value == 1
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(
        probabilities[0], expected_probabilities((1.0, 0.0, 0.0), version=1), rtol=1e-5
    )


def test_metadata_returns_the_signature_def_map(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    request.metadata_field.append("signature_def")
    response = predict_stub.GetModelMetadata(request, timeout=10)
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 2
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert list(signatures.signature_def) == ["serving_default"]
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    images = signature.inputs["images"]
    assert images.dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in images.tensor_shape.dim] == [-1, 32, 32, 3]
    probabilities = signature.outputs["probabilities"]
    assert probabilities.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in probabilities.tensor_shape.dim] == [-1, 3]


def test_metadata_without_fields_is_invalid(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    assert rpc_error(predict_stub.GetModelMetadata, request).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_model_status_lists_available_versions(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    response = stub.GetModelStatus(request, timeout=10)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (2, available, 0),
        (1, available, 0),
    ]
    request.model_spec.version.value = 1
    assert [s.version for s in stub.GetModelStatus(request, timeout=10).model_version_status] == [1]

    request.model_spec.version.value = 9
    error = rpc_error(stub.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"Could not find version 9 of model {MODEL}"


def test_unknown_model_or_version_is_not_found(predict_stub):
    error = rpc_error(predict_stub.Predict, predict_request(colour_frames(), name="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(nope)"

    error = rpc_error(predict_stub.Predict, predict_request(colour_frames(), version=7))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"Servable not found for request: Specific({MODEL}, 7)"


def test_unknown_signature_is_a_failed_precondition(predict_stub):
    request = predict_request(colour_frames())
    request.model_spec.signature_name = "classify"
    error = rpc_error(predict_stub.Predict, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == 'Serving signature key "classify" not found.'


@pytest.mark.parametrize(
    ("frames", "alias", "message"),
    [
        (colour_frames(), "pixels", "input tensor alias not found in signature: pixels"),
        (colour_frames(dtype=np.float32), "images", "to be uint8 but float is provided"),
        (colour_frames(size=16), "images", "has shape [3, 16, 16, 3], incompatible"),
    ],
    ids=["input-name", "dtype", "shape"],
)
def test_bad_inputs_are_invalid_arguments(predict_stub, frames, alias, message):
    error = rpc_error(predict_stub.Predict, predict_request(frames, alias=alias))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


def test_large_float_batch_passes_the_message_limit(tmp_path):
    # 8 x 224 x 224 x 3 float32 is 4.8 MB, past gRPC's default 4 MB limit.
    make_tiny_model(tmp_path, image_size=224, input_dtype="float32")
    frames = np.zeros((9, 224, 224, 3), dtype=np.float32)
    frames[:, ..., 1] = 255.0
    with serve(tmp_path, MODEL, max_batch=8) as served:
        with grpc.insecure_channel(
            served.target,
            options=[("grpc.max_send_message_length", LIMIT), ("grpc.max_receive_message_length", LIMIT)],
        ) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            request = predict_request(frames[:8])
            assert request.ByteSize() > 4 * 1024 * 1024
            probabilities = tf.make_ndarray(stub.Predict(request, timeout=30).outputs["probabilities"])
            assert probabilities.shape == (8, 3)
            assert (probabilities.argmax(axis=1) == 1).all()

            error = rpc_error(stub.Predict, predict_request(frames))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.details() == "Task size 9 is larger than maximum input batch size 8"


def test_sigterm_stops_the_server_cleanly(tiny_base):
    with serve(tiny_base, MODEL) as served:
        with grpc.insecure_channel(served.target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            assert stub.Predict(predict_request(colour_frames()), timeout=10).model_spec.version.value == 2
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=20) == 0
        assert "stopping" in served.log()
        assert not is_listening(served.port)


def test_taken_port_fails_loudly(server, tiny_base):
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "stack.model_server", "--port", str(server.port),
         "--model-name", MODEL, "--model-base-path", str(tiny_base)],
        cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{server.port}" in done.stderr


# -- server-side batching --------------------------------------------------------------------------

BATCH_LIMIT = 8
CLIENTS = 6
ROUNDS = 8
SATURATED = 255  # the batching test model refuses frames with a saturated pixel, at run time


def make_picky_model(base) -> None:
    """Versions 1 and 2 answer each frame's mean pixel (plus 1000 for version 2), one row per frame,
    and fail inside the model call, not in input checks, on any frame holding a 255."""

    class Picky(tf.Module):
        def __init__(self, offset: float) -> None:
            super().__init__()
            self.offset = tf.Variable(offset, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.uint8, name="images")])
        def serve(self, images):
            pixels = tf.cast(images, tf.float32)
            check = tf.debugging.assert_less(
                tf.reduce_max(pixels), float(SATURATED), message="saturated frame"
            )
            with tf.control_dependencies([check]):
                return {"mean": tf.reduce_mean(pixels, axis=[1, 2, 3]) + self.offset}

    for version, offset in ((1, 0.0), (2, 1000.0)):
        module = Picky(offset)
        tf.saved_model.save(module, str(base / str(version)), signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("picky")
    make_picky_model(base)
    stats_file = tmp_path_factory.mktemp("stats") / "batching.json"
    options = ["--workers", str(CLIENTS + 2), "--batch-timeout-ms", "50", "--stats-file", str(stats_file)]
    with serve(base, "picky", max_batch=BATCH_LIMIT, options=options) as served:
        yield served.target, stats_file
        assert terminate(served.process, timeout=30) == 0


def read_stats(stats_file) -> dict[str, int]:
    return json.loads(stats_file.read_text())


def picky_request(values: list[int], version: int | None):
    frames = np.stack([np.full((8, 8, 3), v, dtype=np.uint8) for v in values])
    request = predict_request(frames, name="picky", version=version)
    request.output_filter.append("mean")
    return request


def run_clients(target: str, plan) -> list:
    """Every client sends its rounds' requests, all clients starting each round together.

    `plan(client, round)` gives (row values, version or None); results are (client, round,
    values, version, outcome) with outcome the answered means or the grpc.RpcError.
    """
    barrier = threading.Barrier(CLIENTS)
    results: list = []
    lock = threading.Lock()

    def client(index: int) -> None:
        with grpc.insecure_channel(target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            for round_ in range(ROUNDS):
                values, version = plan(index, round_)
                barrier.wait(timeout=60)
                try:
                    response = stub.Predict(picky_request(values, version), timeout=30)
                    outcome = (response.model_spec.version.value, tf.make_ndarray(response.outputs["mean"]))
                except grpc.RpcError as exc:
                    outcome = exc
                with lock:
                    results.append((index, round_, values, version, outcome))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == CLIENTS * ROUNDS
    return results


def test_concurrent_requests_share_model_calls_and_get_their_own_rows(batching_server):
    target, stats_file = batching_server
    before = read_stats(stats_file)

    def plan(client: int, round_: int):
        rows = 1 + (client + round_) % 3
        values = [(client * 37 + round_ * 11 + k * 5) % 250 for k in range(rows)]
        return values, (1 if client % 2 else None)  # odd clients pin version 1, others get the latest

    for _client, _round, values, version, outcome in run_clients(target, plan):
        assert not isinstance(outcome, grpc.RpcError), outcome
        served_version, means = outcome
        assert served_version == (version or 2)
        offset = 1000.0 if served_version == 2 else 0.0
        np.testing.assert_allclose(means, [v + offset for v in values])

    after = read_stats(stats_file)
    requests = after["requests"] - before["requests"]
    calls = after["model_calls"] - before["model_calls"]
    assert requests == CLIENTS * ROUNDS
    assert after["merged_calls"] > before["merged_calls"]
    assert calls < requests
    assert 2 <= after["largest_call_requests"] and after["largest_call_rows"] <= BATCH_LIMIT


def test_a_failing_request_does_not_fail_the_requests_it_was_merged_with(batching_server):
    target, stats_file = batching_server
    before = read_stats(stats_file)

    def plan(client: int, round_: int):
        values = [(client * 13 + round_) % 250, 7]
        if client == 0:
            values[1] = SATURATED
        return values, None

    for client, _round, values, _version, outcome in run_clients(target, plan):
        if client == 0:
            assert isinstance(outcome, grpc.RpcError)
            assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "saturated frame" in outcome.details()
        else:
            assert not isinstance(outcome, grpc.RpcError), outcome
            np.testing.assert_allclose(outcome[1], [v + 1000.0 for v in values])

    after = read_stats(stats_file)
    assert after["fallbacks"] > before["fallbacks"]
