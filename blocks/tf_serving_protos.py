"""TF Serving's gRPC messages and stub, from tensorflow-serving-api, without TensorFlow's runtime.

`tensorflow_serving.apis` imports its messages' dependencies from `tensorflow.core.*`; Python
imports a package before its modules, and `tensorflow/__init__.py` loads all of TensorFlow
(about 4 s and 700 MB) though the messages are plain protobuf modules. So, when TensorFlow is
not loaded already, its package and the two sub-packages the messages live in are stood in for
by empty packages that point at the same folders while the messages are imported, then taken
out again: the generated modules are the installed ones, unchanged, and a later
`import tensorflow` (the model server, a test) loads the real package and finds them in place.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import types
from types import ModuleType

_PACKAGES = ("tensorflow", "tensorflow.core", "tensorflow.core.framework", "tensorflow.core.protobuf")
_lock = threading.Lock()
_loaded: dict[str, ModuleType] = {}


def load() -> dict[str, ModuleType]:
    """The message modules by short name: tensor, tensor_shape, types, metadata, predict, service."""
    with _lock:
        if not _loaded:
            _loaded.update(_import())
        return dict(_loaded)


def _import() -> dict[str, ModuleType]:
    """Once per process (`load` keeps them): stand-ins only while the messages are imported."""
    standing_in = [] if "tensorflow" in sys.modules else _stand_in()
    try:
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorflow_serving.apis import (
            get_model_metadata_pb2,
            predict_pb2,
            prediction_service_pb2_grpc,
        )
    finally:
        for name in standing_in:
            sys.modules.pop(name, None)
    return {
        "tensor": tensor_pb2,
        "tensor_shape": tensor_shape_pb2,
        "types": types_pb2,
        "metadata": get_model_metadata_pb2,
        "predict": predict_pb2,
        "service": prediction_service_pb2_grpc,
    }


def _stand_in() -> list[str]:
    found = importlib.util.find_spec("tensorflow")
    if found is None or not found.submodule_search_locations:
        raise ImportError(
            "tensorflow-serving-api needs the tensorflow package installed (its messages live there)"
        )
    root = list(found.submodule_search_locations)[0]
    made = []
    for name in _PACKAGES:
        if name in sys.modules:
            continue
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(root, *name.split(".")[1:])]
        sys.modules[name] = package
        made.append(name)
    return made
