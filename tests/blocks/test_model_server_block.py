"""The TF Serving model block against the stack's model server (real process, real gRPC)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from blocks.model_server import ModelMismatch, ModelServerError, TFServingModel
from stack import model_build
from stack.paths import PROJECT_ROOT
from stack.ports import free_port
from stack.tiny_model import expected_probabilities, make_tiny_model, serve
from tests.polling import wait_until

MODEL = "tiny"
MAX_BATCH = 4  # the server refuses bigger batches, so the block's batching is checked by it


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    labels = make_tiny_model(base, versions=(1, 2))
    with serve(base, MODEL, max_batch=MAX_BATCH) as running:
        yield running, labels


def block(served, **settings) -> TFServingModel:
    running, labels = served
    defaults = dict(
        target=running.target, model_name=MODEL, input_size=32, labels=labels, batch_size=MAX_BATCH
    )
    return TFServingModel(**{**defaults, **settings})


def colour_frames(count: int, size: int = 32) -> np.ndarray:
    frames = np.zeros((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        frames[i, ..., i % 3] = 255
    return frames


def test_module_import_stays_cheap():
    code = "import sys, blocks.model_server; print(sorted({'grpc', 'tensorflow', 'tensorflow_serving'} & set(sys.modules)))"
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_metadata_check_passes_and_reports_the_version(served):
    with block(served).connect() as client:
        assert client.check_metadata() == 2
        assert client.version == 2


def test_wrong_input_name_is_a_mismatch(served):
    with block(served, input_name="pixels").connect() as client:
        with pytest.raises(ModelMismatch) as info:
            client.check_metadata()
    message = str(info.value)
    assert f"model {MODEL}" in message and "input_name" in message
    assert "'pixels'" in message and "['images']" in message


def test_wrong_input_size_is_a_mismatch(served):
    with block(served, input_size=224).connect() as client:
        with pytest.raises(ModelMismatch) as info:
            client.check_metadata()
    message = str(info.value)
    assert f"model {MODEL}" in message and "input_size" in message
    assert "[-1, 224, 224, 3]" in message and "[-1, 32, 32, 3]" in message


def test_wrong_dtype_and_label_count_are_mismatches(served):
    with block(served, input_dtype="float32").connect() as client:
        with pytest.raises(ModelMismatch, match="input_dtype expected DT_FLOAT, served DT_UINT8"):
            client.check_metadata()
    with block(served, labels=["a", "b"]).connect() as client:
        with pytest.raises(ModelMismatch, match="labels has 2 names, output 'probabilities' has 3 classes"):
            client.check_metadata()


def test_classify_across_batch_boundaries(served):
    frames = colour_frames(11)
    with block(served, top_k=2).connect() as client:
        results = client.classify(frames)
        assert client.version == 2
    assert len(results) == 11
    expected = ["red", "green", "blue"]
    for i, top in enumerate(results):
        assert len(top) == 2
        assert top[0][0] == expected[i % 3]
        colour = tuple(1.0 if c == i % 3 else 0.0 for c in range(3))
        assert top[0][1] == pytest.approx(expected_probabilities(colour, version=2)[i % 3], rel=1e-5)


def test_classify_batches_answers_each_batch_in_order_with_the_next_one_already_sent(served):
    frames = colour_frames(10)
    batches = [(f"b{n}", frames[i : i + MAX_BATCH]) for n, i in enumerate(range(0, 10, MAX_BATCH))]  # 4, 4, 2
    pulled: list[str] = []  # the batches taken from the source, when each answer is handed out

    def source():
        for tag, batch in batches:
            pulled.append(tag)
            yield tag, batch

    answered = []
    with block(served).connect() as client:
        for tag, tops in client.classify_batches(source()):
            answered.append((tag, [top[0][0] for top in tops], list(pulled)))
        alone = client.classify(frames)
    expected = [
        (tag, [top[0][0] for top in alone[i * MAX_BATCH : (i + 1) * MAX_BATCH]])
        for i, (tag, _) in enumerate(batches)
    ]
    assert [(tag, labels) for tag, labels, _ in answered] == expected
    # Two calls outstanding: the second batch was sent before the first answer was read.
    assert [seen for _, _, seen in answered] == [["b0", "b1"], ["b0", "b1", "b2"], ["b0", "b1", "b2"]]


def test_classify_batches_refuses_a_batch_over_the_block_size_and_names_server_faults(served):
    with block(served).connect() as client:
        with pytest.raises(ValueError, match="a batch of 5 frames, batch_size is 4"):
            list(client.classify_batches([("x", colour_frames(MAX_BATCH + 1))]))
    with block(served, batch_size=MAX_BATCH + 1).connect() as client:
        with pytest.raises(
            ModelServerError, match="Task size 5 is larger than maximum input batch size 4"
        ) as info:
            list(client.classify_batches([("a", colour_frames(1)), ("b", colour_frames(MAX_BATCH + 1))]))
    assert info.value.code == "INVALID_ARGUMENT" and not info.value.retryable


def test_pinned_version_is_used(served):
    with block(served, model_version=1).connect() as client:
        (top,) = client.classify(colour_frames(1))
        assert client.version == 1
        assert client.check_metadata() == 1
    assert top[0] == ("red", pytest.approx(expected_probabilities((1.0, 0.0, 0.0), version=1)[0], rel=1e-5))


def test_server_errors_are_not_retried(served):
    running, _labels = served
    refusal = f"Predict {MODEL}: INVALID_ARGUMENT Task size 5 is larger than maximum input batch size 4"
    before = running.log().count(refusal)
    with block(served, batch_size=MAX_BATCH + 1).connect() as client:
        with pytest.raises(
            ModelServerError, match="Task size 5 is larger than maximum input batch size 4"
        ) as info:
            client.classify(colour_frames(MAX_BATCH + 1))
    assert info.value.code == "INVALID_ARGUMENT" and not info.value.retryable
    # The server saw the call once: no retry inside the client (the server logs each refused Predict).
    assert wait_until("the refusal in the server's log", lambda: running.log().count(refusal) > before, 10)
    assert running.log().count(refusal) == before + 1, running.log()

    with block(served, model_name="nope").connect() as client:
        with pytest.raises(ModelServerError) as info:
            client.check_metadata()
    assert info.value.code == "NOT_FOUND"
    assert "Servable not found for request: Latest(nope)" in str(info.value)


def test_frames_of_the_wrong_shape_are_refused_locally(served):
    with block(served).connect() as client:
        with pytest.raises(ValueError, match=r"frames must be \[N, 32, 32, 3\]"):
            client.classify(colour_frames(2, size=16))


def test_server_down_raises_at_once_flagged_retryable():
    target = f"127.0.0.1:{free_port()}"
    model = TFServingModel(target=target, model_name=MODEL, input_size=32, timeout_seconds=0.5)
    started = time.monotonic()
    with model.connect() as client:
        with pytest.raises(ModelServerError) as info:
            client.classify(colour_frames(1))
    # No retry loop in the client: the task's retry policy reads the flag.
    assert info.value.code == "UNAVAILABLE" and info.value.retryable
    assert target in str(info.value)
    assert time.monotonic() - started < 3


@pytest.mark.model
@pytest.mark.skipif(not model_build.is_built(model_build.model_base_path()), reason="run `make model` first")
def test_real_model_classifies_cat_espresso_moped():
    base = model_build.model_base_path()
    frames = model_build.validation_frames()
    with serve(base, model_build.MODEL_NAME) as running:
        model = TFServingModel(
            target=running.target,
            model_name=model_build.MODEL_NAME,
            labels=model_build.read_labels(base),
            batch_size=2,
        )
        with model.connect() as client:
            assert client.check_metadata() == model_build.MODEL_VERSION
            results = client.classify(np.stack(list(frames.values())))
    for name, top in zip(frames, results, strict=True):
        assert len(top) == 5
        assert top[0][0] in model_build.VALIDATION_PICTURES[name], (name, top)
