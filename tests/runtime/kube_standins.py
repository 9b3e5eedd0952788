"""In-process HTTP stand-ins of the Kubernetes API (one InferenceService) and Prometheus' query API.

No cluster is reachable here, so the controller's official clients (`kubernetes`, urllib against
/api/v1/query) talk over real HTTP to these. The Kubernetes one implements what the controller
uses: GET and merge-PATCH (RFC 7386) of one object, with resourceVersion checks (409 Conflict).
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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


class KubeApi(_Server):
    """One InferenceService at /apis/serving.kserve.io/v1beta1/namespaces/NS/inferenceservices/NAME."""

    def __init__(self, isvc: dict[str, Any]) -> None:
        self.isvc = copy.deepcopy(isvc)
        self.isvc["metadata"].setdefault("resourceVersion", "1")
        self.patches: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        self.lock = threading.Lock()
        meta = self.isvc["metadata"]
        path = (
            f"/apis/serving.kserve.io/v1beta1/namespaces/{meta['namespace']}"
            f"/inferenceservices/{meta['name']}"
        )
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urllib.parse.urlparse(self.path).path != path:
                    _reply(self, 404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return
                with api.lock:
                    _reply(self, 200, api.isvc)

            def do_PATCH(self) -> None:
                if urllib.parse.urlparse(self.path).path != path:
                    _reply(self, 404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.content_types.append(self.headers.get("Content-Type", ""))
                with api.lock:
                    wanted = body.get("metadata", {}).get("resourceVersion")
                    current = api.isvc["metadata"]["resourceVersion"]
                    if wanted is not None and wanted != current:
                        _reply(self, 409, {"kind": "Status", "code": 409, "reason": "Conflict"})
                        return
                    api.patches.append(body)
                    body.get("metadata", {}).pop("resourceVersion", None)
                    api.isvc = merge_patch(api.isvc, body)
                    api.isvc["metadata"]["resourceVersion"] = str(int(current) + 1)
                    _reply(self, 200, api.isvc)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Another writer changes the object (bumps resourceVersion)."""
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
