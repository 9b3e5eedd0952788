"""A servable model folder: `model.onnx` + `serving.json` (format 2), loaded into an ONNX Runtime
session.

The graph takes one input per feature (named by its field, [N, 1], float32 / int64 / string, in
the spec's order) and returns `output` (float32: P(positive) [N, 1], class probabilities [N, K]
or the value [N, 1]) and, for classification, `label` (the class name per row, string [N, 1]).
Loading checks the graph against serving.json's `inputs` (names, order, types) and outputs.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from specml.runtime.serving.categories import CategoryGuard, CategoryPolicy
from specml.runtime.serving.tensors import InputSchema, ProtocolError, TensorSpec

log = logging.getLogger("specml.serving")

# Up to this size (about 250k float32 weights) a model runs on the calling thread: measured on the
# churn MLP, one thread gives the same latency as ORT's pool at half the CPU per run.
SMALL_MODEL_BYTES = 1024 * 1024
MANIFEST_FORMAT = 2
REQUIRED_KEYS = ("model_name", "model_version", "features", "inputs", "output_name")
LABEL_OUTPUT = "label"
ORT_TO_DATATYPE = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(float16)": "FP16",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
DATATYPES = ("FP32", "INT64", "BYTES")
NO_EXPLAIN = "explanations are available for lightgbm and xgboost models"


class ModelLoadError(Exception):
    """The model folder is missing, incomplete or disagrees with its serving.json."""


@dataclass(frozen=True)
class ServingManifest:
    """serving.json, the contract between the training steps and the server."""

    model_name: str
    model_version: str
    task: str
    num_classes: int
    output_name: str
    features: tuple[str, ...]  # `view:field`, in model input order
    inputs: tuple[TensorSpec, ...]  # one per feature, same order
    entity_join_keys: tuple[str, ...]
    feature_repo: str | None
    classes: tuple[str | int, ...] | None = None
    positive_class: str | int | None = None
    categorical: dict[str, CategoryPolicy] = field(default_factory=dict)
    explain: dict[str, Any] | None = None  # trees: the native booster (serving/explain.py)

    @classmethod
    def load(cls, path: Path) -> ServingManifest:
        """Read and check serving.json."""
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{path} is not a JSON object")
        if raw.get("format", 1) != MANIFEST_FORMAT:
            raise ModelLoadError(
                f"{path} is serving.json format {raw.get('format', 1)} (one 'features' matrix); "
                f"this server needs format {MANIFEST_FORMAT} (one input per feature): re-export "
                "the model with this specml"
            )
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise ModelLoadError(f"{path} lacks {', '.join(missing)}")
        try:
            inputs = tuple(_input_spec(i) for i in raw["inputs"])
            categorical = {
                str(name): CategoryPolicy.from_json(str(name), doc)
                for name, doc in (raw.get("categorical") or {}).items()
            }
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{path}: bad 'inputs' or 'categorical': {exc}") from None
        features = tuple(raw["features"])
        if len(features) != len(inputs):
            raise ModelLoadError(f"{path} lists {len(features)} features but {len(inputs)} inputs")
        classes = raw.get("classes")
        return cls(
            model_name=str(raw["model_name"]),
            model_version=str(raw["model_version"]),
            task=str(raw.get("task", "")),
            num_classes=int(raw.get("num_classes", 0)),
            output_name=str(raw["output_name"]),
            features=features,
            inputs=inputs,
            entity_join_keys=tuple(raw.get("entity_join_keys", ())),
            feature_repo=raw.get("feature_repo") or None,
            classes=tuple(classes) if classes else None,
            positive_class=raw.get("positive_class"),
            categorical=categorical,
            explain=raw.get("explain") or None,
        )

    def output_parameters(self) -> dict[str, Any]:
        """What the `output` tensor's parameters say: the class names (binary: the positive)."""
        if not self.classes:
            return {}
        if len(self.classes) == 2 and self.positive_class is not None:
            return {"classes": list(self.classes), "positive_class": self.positive_class}
        return {"classes": list(self.classes)}


def _input_spec(doc: dict[str, Any]) -> TensorSpec:
    name, datatype = doc["name"], doc["datatype"]
    if not isinstance(name, str) or datatype not in DATATYPES:
        raise ValueError(f"input {doc!r} needs a name and a datatype of {', '.join(DATATYPES)}")
    return TensorSpec(name, datatype, (-1, 1))


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
        self.schema = InputSchema(self._check_inputs())
        self.outputs = self._check_outputs()
        self._output_names = [o.name for o in self.outputs]
        try:
            self.categories = CategoryGuard(self.manifest.categorical, self.schema)
        except (TypeError, ValueError) as exc:  # e.g. a non-integer in an INT64 vocabulary
            raise ModelLoadError(
                f"serving.json 'categorical' does not fit the inputs: {exc}"
            ) from None
        self.explainer: Any = None
        if self.manifest.explain is not None:
            from specml.runtime.serving.explain import Explainer

            m = self.manifest
            try:
                self.explainer = Explainer(
                    self.model_dir, m.explain, self.schema.names, m.task, m.classes
                )
            except ValueError as exc:
                raise ModelLoadError(f"serving.json 'explain': {exc}") from None
        self._ready = threading.Event()
        self._ready.set()

    @property
    def name(self) -> str:
        return self.manifest.model_name

    @property
    def version(self) -> str:
        return self.manifest.model_version

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.schema.inputs

    def is_ready(self) -> bool:
        return self._ready.is_set()

    def _check_inputs(self) -> tuple[TensorSpec, ...]:
        graph = self.session.get_inputs()
        declared = self.manifest.inputs
        got = [i.name for i in graph]
        want = [i.name for i in declared]
        if got != want:
            raise ModelLoadError(
                f"model.onnx inputs {got} do not match serving.json inputs {want} (names, order)"
            )
        for node, spec in zip(graph, declared, strict=True):
            datatype = ORT_TO_DATATYPE.get(node.type, node.type)
            if datatype != spec.datatype:
                raise ModelLoadError(
                    f"model input '{spec.name}' is {datatype} in model.onnx but "
                    f"{spec.datatype} in serving.json"
                )
            width = node.shape[-1] if len(node.shape) == 2 else None
            if len(node.shape) != 2 or (isinstance(width, int) and width != 1):
                raise ModelLoadError(
                    f"model input '{spec.name}' has shape {node.shape}; expected [N, 1]"
                )
        return declared

    def _check_outputs(self) -> tuple[TensorSpec, ...]:
        m = self.manifest
        outputs = []
        for out in self.session.get_outputs():
            shape = tuple(d if isinstance(d, int) else -1 for d in out.shape)
            outputs.append(TensorSpec(out.name, ORT_TO_DATATYPE.get(out.type, "FP32"), shape))
        by_name = {o.name: o for o in outputs}
        if m.output_name not in by_name:
            raise ModelLoadError(f"model.onnx has no output '{m.output_name}'")
        if m.classes:
            width = by_name[m.output_name].shape[-1]
            expected = 1 if len(m.classes) == 2 else len(m.classes)
            if width not in (-1, expected, len(m.classes)):
                raise ModelLoadError(
                    f"model.onnx output '{m.output_name}' has {width} columns but serving.json "
                    f"names {len(m.classes)} classes"
                )
            label = by_name.get(LABEL_OUTPUT)
            if label is None or label.datatype != "BYTES":
                raise ModelLoadError(
                    f"a classifier's model.onnx needs a string output '{LABEL_OUTPUT}'"
                )
        return tuple(outputs)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score the input dict; ONNX Runtime sessions are safe to call from several threads."""
        values = self.session.run(self._output_names, inputs)
        return dict(zip(self._output_names, values, strict=True))

    def explain(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Per-input contributions (serving/explain.py); a 400 for models without a booster."""
        if self.explainer is None:
            raise ProtocolError(
                f"{NO_EXPLAIN}; model '{self.name}' version {self.version} is not one (its "
                "serving.json has no 'explain'): drop parameters.explain"
            )
        try:
            return self.explainer.contributions(inputs)
        except ImportError as exc:
            from specml.runtime.serving.explain import library_missing

            raise ProtocolError(library_missing(exc, self.explainer.family)) from None

    def output_parameters(self, name: str) -> dict[str, Any]:
        """The `parameters` of output `name` in metadata and responses (class names)."""
        return self.manifest.output_parameters() if name == self.manifest.output_name else {}

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata document."""
        outputs = []
        for out in self.outputs:
            doc = out.to_json()
            params = self.output_parameters(out.name)
            if params:
                doc["parameters"] = params
            outputs.append(doc)
        doc = {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [i.to_json() for i in self.inputs],
            "outputs": outputs,
        }
        if self.schema.matrix:  # the single-matrix form: its columns, in order
            doc["parameters"] = {"matrix_columns": list(self.schema.names)}
        return doc
