"""Routes: the Open Inference Protocol (KServe v2 REST), predict-by-entity, health and /metrics.

Endpoints (model name and version from serving.json):
  GET  /v2/health/live | /v2/health/ready | /v2
  GET  /v2/models/{name}[/versions/{v}]           model metadata (inputs/outputs, datatype, shape)
  GET  /v2/models/{name}[/versions/{v}]/ready
  POST /v2/models/{name}[/versions/{v}]/infer     JSON tensors or Triton binary tensor extension
  POST /v1/models/{name}/predict-by-entity        {"entities": [{"customer_id": 5}, ...],
                                                  "return_features": false}
       -> {"model_name", "model_version", "outputs": {"output": [[...] per entity]},
           "feature_names": [...], "features": [[...]]}   (features only when asked; null = missing)
  GET  /metrics                                   Prometheus text format
Every refusal is a 4xx with {"error": "..."}; an unexpected failure is a 500, never a crash.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from specml.runtime.serving.batching import DynamicBatcher, UnbatchedRunner
from specml.runtime.serving.http import HttpRequest, HttpResponse
from specml.runtime.serving.metrics import CONTENT_TYPE, ServingMetrics
from specml.runtime.serving.model import ServedModel
from specml.runtime.serving.online_features import EntityError, OnlineFeatureReader
from specml.runtime.serving.protocol import ProtocolError, decode_infer, encode_infer, parse_json

SERVER_NAME = "specml"
SERVER_VERSION = "0.1.0"
MAX_ENTITIES_PER_REQUEST = 4096


def _json(status: int, payload: Any) -> HttpResponse:
    return HttpResponse(status, json.dumps(payload, separators=(",", ":")).encode())


def _error(status: int, message: str) -> HttpResponse:
    return _json(status, {"error": message})


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding gzip/deflate, refusing anything that inflates past the body limit."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"Content-Encoding {encoding!r} is not supported", 415)
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"cannot decompress {encoding} body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ProtocolError(f"decompressed body exceeds the {limit}-byte limit", 413)
    return out


def _endpoint_of(path: str) -> str:
    """The metrics label for a path, known before routing so refusals are counted where they hit."""
    if path.endswith("/infer"):
        return "infer"
    if path.endswith("/predict-by-entity"):
        return "predict_by_entity"
    if path == "/metrics":
        return "metrics"
    if path.startswith("/v2/health") or path.endswith("/ready"):
        return "health"
    if path == "/v2" or path.startswith("/v2/models/"):
        return "metadata"
    return "other"


class InferenceApp:
    """One served model behind the v2 protocol; `handle` is the HTTP server's handler."""

    def __init__(
        self,
        model: ServedModel,
        runner: DynamicBatcher | UnbatchedRunner,
        metrics: ServingMetrics,
        features: OnlineFeatureReader | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.model = model
        self.runner = runner
        self.metrics = metrics
        self.features = features
        self.max_body_bytes = max_body_bytes
        self._lookup_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="specml-lookup")
        self._labels = (model.name, model.version)
        self._metadata = json.dumps(model.metadata(), separators=(",", ":")).encode()
        metrics.model_info.labels(model.name, model.version, model.provider).set(1)
        # children resolved once: labels() per request is measurable at sub-millisecond budgets
        self._latency = {
            e: metrics.request_latency.labels(model.name, model.version, e)
            for e in ("infer", "predict_by_entity", "metadata", "health", "metrics", "other")
        }

    def close(self) -> None:
        """Stop worker threads and close feature-store connections."""
        self.runner.close()
        self._lookup_pool.shutdown(wait=False, cancel_futures=True)
        if self.features is not None:
            self.features.close()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Route one request, time it and count it by status code."""
        start = time.perf_counter()
        endpoint = _endpoint_of(request.path)
        try:
            _, response = await self._route(request)
        except ProtocolError as exc:
            response = _error(exc.status, exc.message)
        elapsed = time.perf_counter() - start
        self._latency[endpoint].observe(elapsed)
        code = str(response.status)
        self.metrics.requests.labels(*self._labels, endpoint, code).inc()
        if response.status >= 400:
            self.metrics.errors.labels(*self._labels, endpoint, code).inc()
        return response

    async def _route(self, request: HttpRequest) -> tuple[str, HttpResponse]:
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if parts == ["metrics"]:
            self._allow(method, "GET")
            return "metrics", HttpResponse(200, self.metrics.render(), CONTENT_TYPE)
        if parts[:1] == ["v2"]:
            return await self._route_v2(method, parts[1:], request)
        if parts[:2] == ["v1", "models"] and len(parts) == 4 and parts[3] == "predict-by-entity":
            self._allow(method, "POST")
            self._check_model(parts[2], None)
            return "predict_by_entity", await self._predict_by_entity(request)
        return "other", _error(404, f"no route for {request.path!r}")

    async def _route_v2(
        self, method: str, parts: list[str], request: HttpRequest
    ) -> tuple[str, HttpResponse]:
        if not parts:
            self._allow(method, "GET")
            return "metadata", _json(
                200,
                {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]},
            )
        if parts == ["health", "live"]:
            self._allow(method, "GET")
            return "health", _json(200, {"live": True})
        if parts == ["health", "ready"]:
            self._allow(method, "GET")
            ready = self.model.is_ready()
            return "health", _json(200 if ready else 503, {"ready": ready})
        if parts[0] != "models" or len(parts) < 2:
            return "other", _error(404, f"no route for {request.path!r}")
        name, rest = parts[1], parts[2:]
        version = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                return "other", _error(404, f"no route for {request.path!r}")
            version, rest = rest[1], rest[2:]
        self._check_model(name, version)
        if not rest:
            self._allow(method, "GET")
            return "metadata", HttpResponse(200, self._metadata)
        if rest == ["ready"]:
            self._allow(method, "GET")
            ready = self.model.is_ready()
            return "health", _json(200 if ready else 503, {"name": name, "ready": ready})
        if rest == ["infer"]:
            self._allow(method, "POST")
            return "infer", await self._infer(request)
        return "other", _error(404, f"no route for {request.path!r}")

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise ProtocolError(f"method {method} not allowed here; use {allowed}", 405)

    def _check_model(self, name: str, version: str | None) -> None:
        if name != self.model.name:
            raise ProtocolError(f"unknown model {name!r}; this server serves '{self.model.name}'", 404)
        if version is not None and version != self.model.version:
            raise ProtocolError(
                f"model '{name}' has no version {version!r}; serving version '{self.model.version}'",
                404,
            )

    def _body(self, request: HttpRequest) -> bytes:
        encoding = request.headers.get("content-encoding", "").lower()
        return _decompress(request.body, encoding, self.max_body_bytes)

    async def _infer(self, request: HttpRequest) -> HttpResponse:
        from specml.runtime.serving.protocol import split_body

        header, binary = split_body(
            self._body(request), request.headers.get("inference-header-content-length")
        )
        infer = decode_infer(header, binary, self.model.input, self.model.outputs)
        results = await self._score(infer.features)
        body, header_length = encode_infer(self.model.name, self.model.version, infer, results)
        if header_length is None:
            return HttpResponse(200, body)
        return HttpResponse(
            200,
            body,
            "application/octet-stream",
            {"Inference-Header-Content-Length": str(header_length)},
        )

    async def _score(self, features: Any) -> dict[str, Any]:
        try:
            return await self.runner.submit(features)
        except Exception as exc:  # ONNX Runtime refused the batch: the server's fault, not the client's
            raise ProtocolError(f"inference failed: {type(exc).__name__}: {exc}", 500) from None

    async def _predict_by_entity(self, request: HttpRequest) -> HttpResponse:
        if self.features is None:
            raise ProtocolError("this model has no online feature store configured", 501)
        payload = parse_json(self._body(request))
        if not isinstance(payload, dict):
            raise ProtocolError("request body must be a JSON object")
        entities = payload.get("entities")
        if not isinstance(entities, list) or not entities:
            raise ProtocolError("'entities' must be a non-empty list of objects of join keys")
        if len(entities) > MAX_ENTITIES_PER_REQUEST:
            raise ProtocolError(f"at most {MAX_ENTITIES_PER_REQUEST} entities per request")
        if not all(isinstance(e, dict) for e in entities):
            raise ProtocolError("each entity must be an object of join keys, e.g. {\"customer_id\": 5}")
        return_features = payload.get("return_features", False)
        if not isinstance(return_features, bool):
            raise ProtocolError("'return_features' must be a boolean")
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            matrix, values = await loop.run_in_executor(self._lookup_pool, self.features.read, entities)
        except EntityError as exc:
            raise ProtocolError(str(exc)) from None
        self.metrics.feature_lookup_latency.labels(*self._labels).observe(time.perf_counter() - start)
        results = await self._score(matrix)
        body: dict[str, Any] = {
            "model_name": self.model.name,
            "model_version": self.model.version,
            "outputs": {name: array.tolist() for name, array in results.items()},
        }
        if return_features:
            body["feature_names"] = list(self.features.feature_refs)
            body["features"] = values
        return _json(200, body)
