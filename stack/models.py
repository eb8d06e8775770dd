"""The stack's models: the detector of people and vehicles (the default model block) and the
ImageNet classifier, both served by the one model server, as TF Serving serves several models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.settings import DEFAULT_MODEL_BLOCK
from stack import detector_build, model_build

if TYPE_CHECKING:  # the blocks import Prefect, which reads its settings once: not before the stack's are set
    from blocks.model_server import TFServingModel

CLASSIFIER_BLOCK = "imagenet"


def ensure_models() -> dict[str, Path]:
    """{model name: base path}, each converted first if it is not cached yet."""
    return {
        detector_build.MODEL_NAME: detector_build.ensure_model(),
        model_build.MODEL_NAME: model_build.ensure_model(),
    }


def model_blocks(target: str) -> dict[str, TFServingModel]:
    """The blocks the stack saves: {block name: block}."""
    from blocks.model_server import TFServingModel

    return {
        DEFAULT_MODEL_BLOCK: TFServingModel(
            target=target,
            model_name=detector_build.MODEL_NAME,
            kind="detector",
            input_size=detector_build.IMAGE_SIZE,
            labels=model_build.read_labels(detector_build.model_base_path()),
            batch_size=4,
        ),
        CLASSIFIER_BLOCK: TFServingModel(
            target=target, model_name=model_build.MODEL_NAME, labels=model_build.labels()
        ),
    }
