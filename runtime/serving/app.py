"""Routes: the Open Inference Protocol (KServe v2 REST), predict-by-entity, SageMaker's serving
contract, health and /metrics.

Endpoints (model name and version from serving.json):
  GET  /v2/health/live | /v2/health/ready | /v2
  GET  /v2/models/{name}[/versions/{v}]           model metadata (inputs/outputs, datatype, shape)
  GET  /v2/models/{name}[/versions/{v}]/ready
  POST /v2/models/{name}[/versions/{v}]/infer     JSON tensors or Triton binary tensor extension
  POST /v1/models/{name}/predict-by-entity        see `InferenceApp._predict_by_entity`
  POST /v1/models/{name}/labels                   delayed labels for monitoring (monitor/labels.py)
  GET  /ping, POST /invocations                   SageMaker's container contract (sagemaker.py)
  GET  /metrics                                   Prometheus text format
Readiness: /v2/health/ready, model ready and /ping answer 503 until the model AND the online
feature reader (when the model has a feature repo) are loaded, and again whenever the online
store cannot be read (its database deleted after start); predict-by-entity then answers 503 with
the reason (the server listens first, see server.py).
Requests carry one input per feature (protocol.py); unknown and missing categories are counted
per feature (categories.py) against the champion's vocabularies, a feature whose policy is
`error` gets a 400 naming the input and the value.
With a challenger loaded (rollouts, see roles.py) each inference request is routed by the rollout
state: shadow mirrors it to the challenger (users get the champion's answer), canary sends the
router's share to the challenger. `/versions/{v}/infer` asks one version directly. Every answer
names the version that produced it (`model_version` and the X-Specml-Model-Version header).
`parameters: {"explain": true}` on an infer request adds the `contributions` output (tree models,
explain.py), computed by the champion (or the pinned version) that also answers; other models 400.
Every refusal is a 4xx with {"error": "..."}; an unexpected failure is a 500, never a crash.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from specml.runtime.serving.asgi import HttpRequest, HttpResponse
from specml.runtime.serving.decoding import BodyDecoder
from specml.runtime.serving.metrics import CONTENT_TYPE, ServingMetrics
from specml.runtime.serving.model import ServedModel
from specml.runtime.serving.online_features import (
    EntityError,
    OnlineFeatureReader,
    StoreUnavailable,
)
from specml.runtime.serving.protocol import (
    CONTRIBUTIONS,
    decode_infer,
    encode_infer,
    parse_json,
    split_body,
)
from specml.runtime.serving.roles import ModelSlot, TrafficControl
from specml.runtime.serving.sagemaker import (
    decode_invocation,
    execution_parameters,
    prediction_rows,
)
from specml.runtime.serving.shadow import ShadowMirror
from specml.runtime.serving.tensors import ProtocolError

SERVER_NAME = "specml"
SERVER_VERSION = "0.1.0"
MAX_ENTITIES_PER_REQUEST = 4096
log = logging.getLogger("specml.serving")


def _json(status: int, payload: Any) -> HttpResponse:
    return HttpResponse(status, json.dumps(payload, separators=(",", ":")).encode())


def _error(status: int, message: str) -> HttpResponse:
    return _json(status, {"error": message})


def unavailable(message: str) -> HttpResponse:
    """503 with a Retry-After hint: the server is up but cannot answer this yet."""
    response = _error(503, message)
    response.headers["Retry-After"] = "1"
    return response


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


def _decode_infer_body(
    body: bytes, encoding: str, limit: int, header_length: str | None, *model: Any
) -> Any:
    """A REST infer body decoded and validated (module-level: it may run in decoding.py's
    helper process)."""
    header, binary = split_body(_decompress(body, encoding, limit), header_length)
    return decode_infer(header, binary, *model)


def _decode_invocation_body(body: bytes, encoding: str, limit: int, *rest: Any) -> Any:
    """A SageMaker invocation body decoded (module-level, like `_decode_infer_body`)."""
    return decode_invocation(_decompress(body, encoding, limit), *rest)


def _endpoint_of(path: str) -> str:
    """The metrics label for a path, known before routing so refusals are counted where they hit."""
    if path.endswith("/infer"):
        return "infer"
    if path.endswith("/predict-by-entity"):
        return "predict_by_entity"
    if path == "/invocations":
        return "invocations"
    if path == "/metrics":
        return "metrics"
    if path.startswith("/v2/health") or path.endswith("/ready") or path == "/ping":
        return "health"
    if path == "/v2" or path.startswith("/v2/models/"):
        return "metadata"
    return "other"


class InferenceApp:
    """Champion (and optional challenger) behind the v2 protocol; `handle` is the HTTP handler."""

    def __init__(
        self,
        traffic: TrafficControl,
        metrics: ServingMetrics,
        features: OnlineFeatureReader | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
        request_log: Any = None,
        label_sink: Any = None,
    ) -> None:
        self.traffic = traffic
        self.metrics = metrics
        self.features = features
        self.max_body_bytes = max_body_bytes
        self.request_log = request_log  # specml.runtime.monitor.requestlog.RequestLog or None
        self.label_sink = label_sink  # specml.runtime.monitor.labels.LabelSink or None
        # Why predict-by-entity cannot answer yet (None: the reader is loaded, or there is none).
        self.features_pending: str | None = None
        self._lookup_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="specml-lookup")
        self.decoder = BodyDecoder()  # large bodies are decoded in a helper process
        self._ids = itertools.count()
        self._id_prefix = os.urandom(4).hex()
        self.shadow = ShadowMirror(metrics)

    @property
    def model(self) -> ServedModel:
        """The champion's model."""
        return self.traffic.table.champion.model

    def set_features(self, reader: OnlineFeatureReader | None) -> None:
        """Install the online feature reader once loaded (the server is ready from then on)."""
        self.features = reader
        self.features_pending = None

    def is_ready(self, slot: ModelSlot | None = None) -> bool:
        """The model (or a pinned version) is loaded and the feature reader (if any) is loaded
        and can read its store."""
        model = (slot or self.traffic.table.champion).model
        if not model.is_ready() or self.features_pending is not None:
            return False
        return self.features is None or self.features.available()

    def close(self) -> None:
        """Stop worker threads, the state watcher, flush the request log, close feature stores."""
        self.traffic.close()
        self._lookup_pool.shutdown(wait=False, cancel_futures=True)
        self.decoder.close()
        if self.features is not None:
            self.features.close()
        if self.request_log is not None:
            self.request_log.close()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Route one request, time it and count it on the version that answered."""
        start = time.perf_counter()
        endpoint = _endpoint_of(request.path)
        slot: ModelSlot | None = None
        try:
            slot, response = await self._route(request)
        except ProtocolError as exc:
            response = _error(exc.status, exc.message)
        (slot or self.traffic.table.champion).count(
            endpoint, response.status, time.perf_counter() - start
        )
        return response

    async def _route(self, request: HttpRequest) -> tuple[ModelSlot | None, HttpResponse]:
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if parts == ["metrics"]:
            self._allow(method, "GET")
            return None, HttpResponse(200, self.metrics.render(), CONTENT_TYPE)
        if parts == ["ping"]:
            self._allow(method, "GET")
            ready = self.is_ready()
            return None, _json(200 if ready else 503, {"ready": ready})
        if parts == ["invocations"]:
            self._allow(method, "POST")
            return await self._invocations(request)
        if parts == ["execution-parameters"]:
            self._allow(method, "GET")
            return None, _json(200, execution_parameters(self.max_body_bytes))
        if parts[:1] == ["v2"]:
            return await self._route_v2(method, parts[1:], request)
        if parts[:2] == ["v1", "models"] and len(parts) == 4 and parts[3] == "predict-by-entity":
            self._allow(method, "POST")
            self._check_model(parts[2], None)
            return await self._predict_by_entity(request)
        if parts[:2] == ["v1", "models"] and len(parts) == 4 and parts[3] == "labels":
            self._allow(method, "POST")
            self._check_model(parts[2], None)
            return None, self._labels(request)
        return None, _error(404, f"no route for {request.path!r}")

    def _labels(self, request: HttpRequest) -> HttpResponse:
        """Store delayed labels for `specml labels` / `specml monitor` (404 when not monitored)."""
        from specml.runtime.monitor.labels import LabelQuotaExceeded, check_label_rows

        if self.label_sink is None:
            return _error(
                404, "this server does not collect labels (it runs without a monitoring folder)"
            )
        doc = parse_json(self._body(request))
        try:
            rows = check_label_rows(doc, self.model.manifest.entity_join_keys)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        try:
            accepted = self.label_sink.append(rows)
        except LabelQuotaExceeded as exc:
            response = _error(429, str(exc))
            response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        except OSError as exc:
            log.error("cannot store labels: %s", exc)
            return _error(503, "labels could not be stored; retry later")
        return _json(200, {"accepted": accepted})

    async def _route_v2(
        self, method: str, parts: list[str], request: HttpRequest
    ) -> tuple[ModelSlot | None, HttpResponse]:
        if not parts:
            self._allow(method, "GET")
            return None, _json(
                200,
                {
                    "name": SERVER_NAME,
                    "version": SERVER_VERSION,
                    "extensions": ["binary_tensor_data"],
                },
            )
        if parts == ["health", "live"]:
            self._allow(method, "GET")
            return None, _json(200, {"live": True})
        if parts == ["health", "ready"]:
            self._allow(method, "GET")
            ready = self.is_ready()
            return None, _json(200 if ready else 503, {"ready": ready})
        if parts[0] != "models" or len(parts) < 2:
            return None, _error(404, f"no route for {request.path!r}")
        name, rest = parts[1], parts[2:]
        version = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                return None, _error(404, f"no route for {request.path!r}")
            version, rest = rest[1], rest[2:]
        pinned = self._check_model(name, version)
        if not rest:
            self._allow(method, "GET")
            return pinned, _json(200, self._metadata())
        if rest == ["ready"]:
            self._allow(method, "GET")
            ready = self.is_ready(pinned)
            return pinned, _json(200 if ready else 503, {"name": name, "ready": ready})
        if rest == ["infer"]:
            self._allow(method, "POST")
            return await self._infer(request, pinned)
        return None, _error(404, f"no route for {request.path!r}")

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise ProtocolError(f"method {method} not allowed here; use {allowed}", 405)

    def _check_model(self, name: str, version: str | None) -> ModelSlot | None:
        """The slot a versioned path pins (None: let the router choose)."""
        table = self.traffic.table
        if name != table.champion.model.name:
            raise ProtocolError(
                f"unknown model {name!r}; this server serves '{table.champion.model.name}'", 404
            )
        if version is None:
            return None
        slot = table.by_version(version)
        if slot is None:
            served = ", ".join(f"'{s.version}'" for s in (table.champion, table.challenger) if s)
            raise ProtocolError(
                f"model '{name}' has no version {version!r}; serving version {served}", 404
            )
        return slot

    def _metadata(self) -> dict[str, Any]:
        table = self.traffic.table
        doc = table.champion.model.metadata()
        if table.challenger is not None:
            doc["versions"] = [table.champion.version, table.challenger.version]
        return doc

    def _body(self, request: HttpRequest) -> bytes:
        encoding = request.headers.get("content-encoding", "").lower()
        return _decompress(request.body, encoding, self.max_body_bytes)

    def _request_id(self, given: str | None, request: HttpRequest) -> str:
        return (
            given or request.headers.get("x-request-id") or f"{self._id_prefix}-{next(self._ids)}"
        )

    async def _infer(
        self, request: HttpRequest, pinned: ModelSlot | None
    ) -> tuple[ModelSlot, HttpResponse]:
        champion = self.traffic.table.champion.model
        infer = await self.decoder.run(
            len(request.body),
            _decode_infer_body,
            request.body,
            request.headers.get("content-encoding", "").lower(),
            self.max_body_bytes,
            request.headers.get("inference-header-content-length"),
            champion.schema,
            champion.outputs,
        )
        request_id = self._request_id(infer.request_id, request)
        if infer.explain:  # one model gives the answer and its contributions: the champion
            pinned = pinned or self.traffic.table.champion
            if pinned.model.explainer is None:
                pinned.model.explain(infer.inputs)  # the 400 naming why
        slot, results = await self._answer(infer.inputs, request_id, "infer", pinned)
        model = slot.model
        parameters = {model.manifest.output_name: model.manifest.output_parameters()}
        if infer.explain:
            results = dict(results)
            results[CONTRIBUTIONS] = await asyncio.to_thread(model.explain, infer.inputs)
            parameters[CONTRIBUTIONS] = model.explainer.parameters()
        body, header_length = encode_infer(model.name, slot.version, infer, results, parameters)
        headers = _version_headers(slot)
        if header_length is None:
            return slot, HttpResponse(200, body, headers=headers)
        headers["Inference-Header-Content-Length"] = str(header_length)
        return slot, HttpResponse(200, body, "application/octet-stream", headers)

    async def _invocations(self, request: HttpRequest) -> tuple[ModelSlot, HttpResponse]:
        """SageMaker's POST /invocations: rows in (records, rows, OIP v2 or CSV), predictions
        out as {"predictions": [...]}, one entry per row named by class (sagemaker.py)."""
        champion = self.traffic.table.champion.model
        inputs, request_id = await self.decoder.run(
            len(request.body),
            _decode_invocation_body,
            request.body,
            request.headers.get("content-encoding", "").lower(),
            self.max_body_bytes,
            request.headers.get("content-type", ""),
            request.headers.get("inference-header-content-length"),
            champion.schema,
            champion.outputs,
        )
        slot, results = await self._answer(
            inputs, self._request_id(request_id, request), "invocations"
        )
        body = {"predictions": prediction_rows(slot.model.manifest, results)}
        response = _json(200, body)
        response.headers.update(_version_headers(slot))
        return slot, response

    async def _answer(
        self,
        features: dict[str, Any],
        request_id: str,
        endpoint: str,
        pinned: ModelSlot | None = None,
        entities: list[dict[str, Any]] | None = None,
    ) -> tuple[ModelSlot, dict[str, Any]]:
        """Score an input dict on the routed slot (one table read: exactly one model answers),
        mirror if asked. Unknown / missing categories are judged by the champion's vocabularies
        (ProtocolError 400 where a feature's policy is `error`) and counted on its series.

        A failing challenger is counted as the challenger's error and the champion answers instead.
        """
        table = self.traffic.table
        counts = table.champion.model.categories.inspect(features)
        if counts:
            table.champion.count_categories(counts)
        if pinned is not None:
            slot, mirror = pinned, None
        else:
            slot, mirror = table.pick(request_id)
        start = time.perf_counter()
        if slot is not table.champion and pinned is None:
            try:
                results = await slot.score(features)
            except Exception as exc:
                # counted once: specml_requests_total on the champion that answers (below)
                self.metrics.errors.labels(*slot.labels, endpoint, "500").inc()
                self.metrics.fallbacks.labels(*slot.labels, endpoint).inc()
                log.warning("challenger v%s failed (%s); the champion answers", slot.version, exc)
                slot = table.champion
                results = await self._score(slot, features)
        else:
            results = await self._score(slot, features)
        elapsed = time.perf_counter() - start
        if mirror is not None:
            self.shadow.mirror(table.champion, mirror, features, results, elapsed)
        if self.request_log is not None:
            try:
                out = results[slot.model.manifest.output_name]
                self.request_log.append(
                    features, out, slot.version, request_id=request_id, entity=entities
                )
            except Exception:  # logging must never fail a request
                log.exception("request log append failed")
        return slot, results

    @staticmethod
    async def _score(slot: ModelSlot, features: Any) -> dict[str, Any]:
        try:
            return await slot.score(features)
        except (
            Exception
        ) as exc:  # ONNX Runtime refused the batch: the server's fault, not the client's
            raise ProtocolError(f"inference failed: {type(exc).__name__}: {exc}", 500) from None

    async def _predict_by_entity(
        self, request: HttpRequest
    ) -> tuple[ModelSlot | None, HttpResponse]:
        """Score entities by their join keys, features read from the online store.

        Request: {"entities": [{"customer_id": 5}, ...], "return_features": false, "id": "..."}
        Answer:  {"model_name", "model_version",
                  "predictions": [{"label", "probabilities": {class: p}} | {"value"} per entity],
                  "outputs": {"output": [[...] per entity], "label": [[...]]},
                  "found": [true | false per entity],
                  "missing_features": [["view:field", ...] per entity],
                  "feature_names": [...], "features": [[...]]}   (the last two when asked)
        A feature the store lacks for an entity, holds as null, or holds with an event time older
        than its view's TTL is imputed by the model exactly as training imputes missing values;
        `missing_features` names those per entity (empty list: all present) and `found` is false
        for an entity the store holds nothing (live) for at all, whose prediction therefore rests
        on imputed values only. Both are counted in specml_entity_lookups_total and
        specml_imputed_features_total. Strings stay strings (missing: ""), numbers are float32
        (missing: NaN). 503 while the feature reader is still loading or its store cannot be read.
        """
        if self.features_pending is not None:
            return None, unavailable(self.features_pending)
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
            raise ProtocolError(
                'each entity must be an object of join keys, e.g. {"customer_id": 5}'
            )
        return_features = payload.get("return_features", False)
        if not isinstance(return_features, bool):
            raise ProtocolError("'return_features' must be a boolean")
        reader = self.features
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self._lookup_pool, reader.lookup, entities)
        except EntityError as exc:
            raise ProtocolError(str(exc)) from None
        except StoreUnavailable as exc:
            log.error("predict-by-entity: %s", exc)
            return None, unavailable(
                f"the online feature store cannot be read ({exc}); predict-by-entity is "
                "unavailable until it is restored (e.g. materialize the features again)"
            )
        champion = self.traffic.table.champion
        inputs = reader.to_inputs(found.values, champion.model.inputs)
        self.metrics.feature_lookup_latency.labels(*champion.labels).observe(
            time.perf_counter() - start
        )
        self._count_lookup(champion, found)
        given = payload.get("id") if isinstance(payload.get("id"), str) else None
        slot, results = await self._answer(
            inputs,
            self._request_id(given, request),
            "predict_by_entity",
            entities=[{k: e[k] for k in reader.join_keys if k in e} for e in entities],
        )
        body: dict[str, Any] = {
            "model_name": slot.model.name,
            "model_version": slot.version,
            "predictions": prediction_rows(slot.model.manifest, results),
            "outputs": {name: array.tolist() for name, array in results.items()},
            "found": found.found,
            "missing_features": found.missing,
        }
        if return_features:
            body["feature_names"] = list(reader.feature_refs)
            body["features"] = found.values
        response = _json(200, body)
        response.headers.update(_version_headers(slot))
        return slot, response

    def _count_lookup(self, slot: ModelSlot, found: Any) -> None:
        """Per entity row: complete | partial | not_found; per imputed feature: missing | expired."""
        m = self.metrics
        outcomes = {"complete": 0, "partial": 0, "not_found": 0}
        imputed: dict[tuple[str, str], int] = {}
        for ok, missing, expired in zip(found.found, found.missing, found.expired, strict=True):
            outcomes["complete" if not missing else "partial" if ok else "not_found"] += 1
            for ref in missing:
                key = (ref, "expired" if ref in expired else "missing")
                imputed[key] = imputed.get(key, 0) + 1
        for outcome, n in outcomes.items():
            if n:
                m.entity_lookups.labels(*slot.labels, outcome).inc(n)
        for (ref, reason), n in imputed.items():
            m.imputed_features.labels(*slot.labels, ref, reason).inc(n)


def _version_headers(slot: ModelSlot) -> dict[str, str]:
    return {"X-Specml-Model-Version": slot.version, "X-Specml-Model-Role": slot.role}
