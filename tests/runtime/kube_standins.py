"""In-process HTTP stand-ins of the Kubernetes API, Prometheus' query API and the KFP v2beta1 API.

No cluster is reachable here, so the official clients (`kubernetes`, `kfp.Client`, urllib against
/api/v1/query) talk over real HTTP to these. They implement exactly what specml uses and record
every call:
- `KubeApi`: GET, merge PATCH (RFC 7386, with resourceVersion checks: 409 Conflict) and JSON patch
  (RFC 6902: add, replace, remove) of a few named objects; anything else is 404;
- `KubeApply`: server-side apply (PATCH application/apply-patch+yaml) of any object;
- `PrometheusApi`: instant queries answered by a function;
- `KfpApi`: pipelines, versions, experiments, runs and recurring runs, in memory.
"""

from __future__ import annotations

import copy
import email.parser
import email.policy
import itertools
import json
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, replace, remove); KeyError/IndexError when a path is missing."""
    doc = copy.deepcopy(target)
    for op in ops:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] == "remove":
            del node[key]
        elif op["op"] == "replace":
            node[key]  # must exist
            node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "add":
            if isinstance(node, list):
                node.insert(len(node) if key == "-" else key, copy.deepcopy(op["value"]))
            else:
                node[key] = copy.deepcopy(op["value"])
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(handler: BaseHTTPRequestHandler, code: int, body: Any) -> None:
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def object_path(obj: dict[str, Any]) -> str:
    """The API path of a namespaced custom object (apiVersion group/version + kind)."""
    meta = obj["metadata"]
    plural = {"InferenceService": "inferenceservices", "VirtualService": "virtualservices"}
    return (
        f"/apis/{obj['apiVersion']}/namespaces/{meta['namespace']}"
        f"/{plural[obj['kind']]}/{meta['name']}"
    )


class KubeApi(_Server):
    """An InferenceService (and optionally more objects, e.g. a VirtualService) at their API paths.

    `requests` holds (method, path) of every call; `patches` the InferenceService's merge-patch
    bodies; `json_patches` every JSON patch as (path, ops); `content_types` every PATCH's type.
    """

    def __init__(self, isvc: dict[str, Any], *others: dict[str, Any]) -> None:
        isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", **isvc}
        self.objects: dict[str, dict[str, Any]] = {}
        for obj in (isvc, *others):
            obj = copy.deepcopy(obj)
            obj["metadata"].setdefault("resourceVersion", "1")
            self.objects[object_path(obj)] = obj
        self.isvc_path = object_path(isvc)
        self.requests: list[tuple[str, str]] = []
        self.patches: list[dict[str, Any]] = []
        self.json_patches: list[tuple[str, list[dict[str, Any]]]] = []
        self.content_types: list[str] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _path(self) -> str | None:
                path = urllib.parse.urlparse(self.path).path
                api.requests.append((self.command, path))
                if path not in api.objects:
                    _reply(self, 404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return None
                return path

            def do_GET(self) -> None:
                path = self._path()
                if path is not None:
                    with api.lock:
                        _reply(self, 200, api.objects[path])

            def do_PATCH(self) -> None:
                path = self._path()
                if path is None:
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                kind = self.headers.get("Content-Type", "")
                api.content_types.append(kind)
                with api.lock:
                    obj = api.objects[path]
                    current = obj["metadata"]["resourceVersion"]
                    if kind == "application/json-patch+json":
                        try:
                            obj = json_patch(obj, body)
                        except (KeyError, IndexError) as exc:
                            _reply(self, 422, {"kind": "Status", "code": 422, "reason": str(exc)})
                            return
                        api.json_patches.append((path, body))
                    elif kind == "application/merge-patch+json":
                        wanted = body.get("metadata", {}).get("resourceVersion")
                        if wanted is not None and wanted != current:
                            _reply(self, 409, {"kind": "Status", "code": 409, "reason": "Conflict"})
                            return
                        if path == api.isvc_path:
                            api.patches.append(body)
                        body.get("metadata", {}).pop("resourceVersion", None)
                        obj = merge_patch(obj, body)
                    else:
                        _reply(self, 415, {"kind": "Status", "code": 415})
                        return
                    obj["metadata"]["resourceVersion"] = str(int(current) + 1)
                    api.objects[path] = obj
                    _reply(self, 200, obj)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    @property
    def isvc(self) -> dict[str, Any]:
        """The InferenceService as the API server holds it now."""
        return self.objects[self.isvc_path]

    def get(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Another object as the API server holds it now (by the object's own path)."""
        return self.objects[object_path(obj)]

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Another writer changes the InferenceService (bumps resourceVersion)."""
        with self.lock:
            change(self.isvc)
            rv = int(self.isvc["metadata"]["resourceVersion"])
            self.isvc["metadata"]["resourceVersion"] = str(rv + 1)


class PrometheusApi(_Server):
    """/api/v1/query answering from `answer(query) -> value or None` (an instant vector)."""

    def __init__(self, answer: Callable[[str], float | None]) -> None:
        self.queries: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _query(self, params: dict[str, list[str]]) -> None:
                query = params["query"][0]
                api.queries.append(query)
                value = answer(query)
                result = [] if value is None else [{"metric": {}, "value": [0, repr(value)]}]
                _reply(
                    self,
                    200,
                    {"status": "success", "data": {"resultType": "vector", "result": result}},
                )

            def do_GET(self) -> None:
                self._query(urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                self._query(urllib.parse.parse_qs(body))

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)


def _multipart_file(content_type: str, body: bytes) -> bytes:
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    part = next(iter(message.iter_parts()))
    return part.get_payload(decode=True)


class KfpApi(_Server):
    """Pipelines, versions, experiments, runs and recurring runs, in memory."""

    def __init__(self) -> None:
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.packages: dict[str, dict[str, Any]] = {}  # version id -> uploaded pipeline spec
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: list[dict[str, Any]] = []
        self.recurring: dict[str, dict[str, Any]] = {}
        self.tokens: list[str | None] = []
        ids = itertools.count(1)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _parts(self) -> tuple[str, dict[str, list[str]]]:
                url = urllib.parse.urlparse(self.path)
                api.tokens.append(self.headers.get("Authorization"))
                return url.path.removeprefix("/apis/v2beta1"), urllib.parse.parse_qs(url.query)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def do_GET(self) -> None:
                path, query = self._parts()
                if path == "/healthz":
                    _reply(self, 200, {"multi_user": False})
                elif path == "/pipelines":
                    pred = json.loads(query["filter"][0])["predicates"][0]
                    name = pred.get("string_value") or pred.get("stringValue")
                    found = [p for p in api.pipelines.values() if p["display_name"] == name]
                    _reply(self, 200, {"pipelines": found} if found else {})
                elif path.startswith("/pipelines/") and path.endswith("/versions"):
                    versions = api.versions[path.split("/")[2]]  # kept in creation order
                    if query.get("sort_by") == ["created_at desc"]:
                        versions = versions[::-1]
                    _reply(self, 200, {"pipeline_versions": versions})
                elif path == "/experiments":
                    pred = json.loads(query["filter"][0])["predicates"][0]
                    name = pred.get("string_value") or pred.get("stringValue")
                    found = [e for e in api.experiments.values() if e["display_name"] == name]
                    _reply(self, 200, {"experiments": found} if found else {})
                elif path == "/recurringruns":
                    _reply(self, 200, {"recurringRuns": list(api.recurring.values())})
                else:
                    _reply(self, 404, {"error": path})

            def do_POST(self) -> None:
                path, query = self._parts()
                body = self._body()
                if path in ("/pipelines/upload", "/pipelines/upload_version"):
                    spec = yaml.safe_load(_multipart_file(self.headers["Content-Type"], body))
                    if path == "/pipelines/upload":
                        pid = f"p{next(ids)}"
                        api.pipelines[pid] = {"pipeline_id": pid, "display_name": query["name"][0]}
                        api.versions[pid] = []
                        name, out = query["name"][0], api.pipelines[pid]
                    else:
                        pid, name, out = query["pipelineid"][0], query["name"][0], None
                    vid = f"v{next(ids)}"
                    version = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": name}
                    api.versions[pid].append(version)
                    api.packages[vid] = spec
                    _reply(self, 200, out or version)
                elif path == "/experiments":
                    exp = json.loads(body)
                    exp["experiment_id"] = f"e{next(ids)}"
                    api.experiments[exp["experiment_id"]] = exp
                    _reply(self, 200, exp)
                elif path == "/runs":
                    run = json.loads(body)
                    run["run_id"] = f"r{next(ids)}"
                    api.runs.append(run)
                    _reply(self, 200, run)
                elif path == "/recurringruns":
                    job = json.loads(body)
                    job["recurring_run_id"] = f"j{next(ids)}"
                    api.recurring[job["recurring_run_id"]] = job
                    _reply(self, 200, job)
                else:
                    _reply(self, 404, {"error": path})

            def do_DELETE(self) -> None:
                path, _ = self._parts()
                api.recurring.pop(path.split("/")[-1], None)
                _reply(self, 200, {})

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)


class KubeApply(_Server):
    """Server-side apply (PATCH application/apply-patch+yaml) of any object, recorded."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                url = urllib.parse.urlparse(self.path)
                query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                if self.headers.get("Content-Type") != "application/apply-patch+yaml":
                    _reply(self, 415, {"kind": "Status", "code": 415})
                    return
                doc = yaml.safe_load(self.rfile.read(int(self.headers["Content-Length"])))
                api.applied.append((url.path, query, doc))
                _reply(self, 200, doc)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
