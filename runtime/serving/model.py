"""A servable model folder: `model.onnx` + `serving.json`, loaded into an ONNX Runtime session."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from specml.runtime.serving.protocol import TensorSpec

log = logging.getLogger("specml.serving")

# Up to this size (about 250k float32 weights) a model runs on the calling thread: measured on the
# churn MLP, one thread gives the same latency as ORT's pool at half the CPU per run.
SMALL_MODEL_BYTES = 1024 * 1024
REQUIRED_KEYS = ("model_name", "model_version", "features", "input_name", "output_name")
ORT_TO_DATATYPE = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(float16)": "FP16",
    "tensor(bool)": "BOOL",
}


class ModelLoadError(Exception):
    """The model folder is missing, incomplete or disagrees with its serving.json."""


@dataclass(frozen=True)
class ServingManifest:
    """serving.json, the contract between the training steps and the server."""

    model_name: str
    model_version: str
    task: str
    num_classes: int
    input_name: str
    output_name: str
    features: tuple[str, ...]  # `view:field`, in model input order
    entity_join_keys: tuple[str, ...]
    feature_repo: str | None

    @classmethod
    def load(cls, path: Path) -> ServingManifest:
        """Read and check serving.json."""
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}") from None
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise ModelLoadError(f"{path} lacks {', '.join(missing)}")
        return cls(
            model_name=str(raw["model_name"]),
            model_version=str(raw["model_version"]),
            task=str(raw.get("task", "")),
            num_classes=int(raw.get("num_classes", 0)),
            input_name=str(raw["input_name"]),
            output_name=str(raw["output_name"]),
            features=tuple(raw["features"]),
            entity_join_keys=tuple(raw.get("entity_join_keys", ())),
            feature_repo=raw.get("feature_repo") or None,
        )


def choose_providers(available: list[str]) -> list[str]:
    """CUDA first when this onnxruntime build offers it, CPU always as the fallback."""
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(model_path: Path, intra_op_threads: int = 0) -> Any:
    """An InferenceSession on the best available provider; logs which one it got."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not intra_op_threads and model_path.stat().st_size <= SMALL_MODEL_BYTES:
        intra_op_threads = 1  # a small (tabular) graph: splitting its ops costs more than it saves
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    # Idle intra-op threads otherwise spin after every run: with batches arriving every few
    # hundred microseconds that burned a core (2x CPU per request on a 2-core box) which the
    # event loop and the clients need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = choose_providers(ort.get_available_providers())
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    log.info("onnxruntime session for %s on %s", model_path.name, session.get_providers()[0])
    return session


class ServedModel:
    """One loaded model: manifest, session, tensor specs, and a thread-safe `run`."""

    def __init__(self, model_dir: Path, intra_op_threads: int = 0) -> None:
        self.model_dir = Path(model_dir)
        onnx_path = self.model_dir / "model.onnx"
        if not onnx_path.is_file():
            raise ModelLoadError(f"no model.onnx in {self.model_dir}")
        self.manifest = ServingManifest.load(self.model_dir / "serving.json")
        self.session = make_session(onnx_path, intra_op_threads)
        self.provider: str = self.session.get_providers()[0]
        self.input, self.outputs = self._tensor_specs()
        self._ready = threading.Event()
        self._ready.set()

    @property
    def name(self) -> str:
        return self.manifest.model_name

    @property
    def version(self) -> str:
        return self.manifest.model_version

    def is_ready(self) -> bool:
        return self._ready.is_set()

    def _tensor_specs(self) -> tuple[TensorSpec, tuple[TensorSpec, ...]]:
        inputs = {i.name: i for i in self.session.get_inputs()}
        m = self.manifest
        if m.input_name not in inputs or len(inputs) != 1:
            raise ModelLoadError(
                f"model.onnx inputs {sorted(inputs)} do not match serving.json input '{m.input_name}'"
            )
        model_in = inputs[m.input_name]
        n_features = len(m.features)
        declared = model_in.shape[-1] if model_in.shape else None
        if isinstance(declared, int) and declared != n_features:
            raise ModelLoadError(
                f"model.onnx takes {declared} features but serving.json lists {n_features}"
            )
        if ORT_TO_DATATYPE.get(model_in.type) != "FP32":
            raise ModelLoadError(
                f"model input '{m.input_name}' must be float32, is {model_in.type}"
            )
        outputs = []
        for out in self.session.get_outputs():
            shape = tuple(d if isinstance(d, int) else -1 for d in out.shape)
            outputs.append(TensorSpec(out.name, ORT_TO_DATATYPE.get(out.type, "FP32"), shape))
        if m.output_name not in {o.name for o in outputs}:
            raise ModelLoadError(f"model.onnx has no output '{m.output_name}'")
        return TensorSpec(m.input_name, "FP32", (-1, n_features)), tuple(outputs)

    def run(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Score float32 [N, F]; ONNX Runtime sessions are safe to call from several threads."""
        names = [o.name for o in self.outputs]
        values = self.session.run(names, {self.input.name: features})
        return dict(zip(names, values, strict=True))

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata document."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [self.input.to_json()],
            "outputs": [o.to_json() for o in self.outputs],
        }
