"""The TF Serving block as a detector, against the stack's model server serving the tiny detector."""

from __future__ import annotations

import numpy as np
import pytest

from blocks.model_server import ModelMismatch, TFServingModel
from stack.tiny_model import make_tiny_detector, make_tiny_model, serve

SIZE = 64
MAX_BATCH = 4


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("detector")
    labels = make_tiny_detector(base, image_size=SIZE)
    with serve(base, "detector", max_batch=MAX_BATCH) as running:
        yield running, labels


def detector(served, **settings) -> TFServingModel:
    running, labels = served
    defaults = dict(
        target=running.target,
        model_name="detector",
        kind="detector",
        input_size=SIZE,
        labels=labels,
        batch_size=MAX_BATCH,
    )
    return TFServingModel(**{**defaults, **settings})


def images(count: int) -> np.ndarray:
    """Image i has a bright 8 x 16 person at (4 i, 2 i) when i is even; odd ones are dark."""
    out = np.full((count, SIZE, SIZE, 3), 20, dtype=np.uint8)
    for i in range(0, count, 2):
        out[i, 2 * i : 2 * i + 16, 4 * i : 4 * i + 8] = 240
    return out


def test_detect_batches_answers_normalised_boxes_x_first_in_order(served):
    frames = images(6)
    batches = [("a", frames[:4]), ("b", frames[4:])]
    with detector(served).connect() as client:
        assert client.check_metadata() == 1
        answered = list(client.detect_batches(iter(batches)))
    assert [tag for tag, _ in answered] == ["a", "b"]
    per_image = answered[0][1] + answered[1][1]
    for i, found in enumerate(per_image):
        if i % 2:
            assert found == []
            continue
        ((label, score, box),) = found
        assert label == "person" and score == pytest.approx(240 / 255, abs=1e-3)
        assert box == pytest.approx((4 * i / SIZE, 2 * i / SIZE, (4 * i + 8) / SIZE, (2 * i + 16) / SIZE))


def test_threshold_and_tracked_labels_filter_the_boxes(served):
    # The served boxes score 240/255 = 0.94: under a start threshold of 0.95 they still come back
    # to follow objects, under a follow threshold of 0.95 too they do not.
    with detector(served, score_threshold=0.95).connect() as client:
        [[found]] = [answer[0] for _, answer in client.detect_batches([(0, images(1))])]
        assert found[:2] == ("person", pytest.approx(240 / 255, abs=1e-3))
    with detector(served, score_threshold=0.95, follow_threshold=0.95).connect() as client:
        assert [f for _, answer in client.detect_batches([(0, images(1))]) for f in answer] == [[]]
    with detector(served, tracked_labels=["car"]).connect() as client:
        assert [f for _, answer in client.detect_batches([(0, images(1))]) for f in answer] == [[]]


def test_a_detector_block_refuses_what_it_cannot_use(served):
    with detector(served, tracked_labels=["person", "persn"]).connect() as client:
        with pytest.raises(ModelMismatch, match=r"tracked_labels \['persn'\]"):
            client.check_metadata()
    with detector(served, labels=[]).connect() as client:
        with pytest.raises(ModelMismatch, match="labels is empty"):
            client.check_metadata()
    with detector(served, kind="classifier").connect() as client:  # a detector served, a classifier asked for
        with pytest.raises(ModelMismatch, match="output_name expected 'probabilities'"):
            client.check_metadata()
        with pytest.raises(ValueError, match="is a classifier: detect_batches needs a detector"):
            client.detect_batches([])


def test_kind_detector_refuses_a_served_classifier(tmp_path):
    labels = make_tiny_model(tmp_path, image_size=SIZE)
    with serve(tmp_path, "classifier") as running:
        block = TFServingModel(
            target=running.target, model_name="classifier", kind="detector", input_size=SIZE, labels=labels
        )
        with block.connect() as client:
            with pytest.raises(ModelMismatch) as info:
                client.check_metadata()
    message = str(info.value)
    assert "model classifier" in message and "kind 'detector'" in message
    assert "detection_boxes" in message and "['probabilities']" in message


def test_output_settings_tell_detector_settings_apart(served):
    base = detector(served).output_settings()
    assert base["kind"] == "detector" and base["tracked_labels"] == sorted(
        ["person", "bicycle", "car", "motorcycle", "bus", "truck"]
    )
    assert detector(served, score_threshold=0.5).output_settings() != base
    assert detector(served, follow_threshold=0.3).output_settings() != base
    assert detector(served, tracked_labels=["person"]).output_settings() != base
    classifier = TFServingModel(
        model_name="m", labels=["a"]
    ).output_settings()  # the classify keys as they were
    assert set(classifier) == {"model", "signature", "input", "output", "labels", "top_k"}
