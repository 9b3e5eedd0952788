"""In-process HTTP stand-ins of the KFP v2beta1 API and the Kubernetes API's server-side apply.

No cluster is reachable here; `kfp.Client` and the `kubernetes` client talk to these over real
HTTP. They implement exactly the endpoints `specml apply --target kubeflow` and the retraining
webhook use, and record every call.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(handler: BaseHTTPRequestHandler, code: int, body: Any) -> None:
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


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
                    _send(self, 200, {"multi_user": False})
                elif path == "/pipelines":
                    pred = json.loads(query["filter"][0])["predicates"][0]
                    name = pred.get("string_value") or pred.get("stringValue")
                    found = [p for p in api.pipelines.values() if p["display_name"] == name]
                    _send(self, 200, {"pipelines": found} if found else {})
                elif path.startswith("/pipelines/") and path.endswith("/versions"):
                    versions = api.versions[path.split("/")[2]]  # kept in creation order
                    if query.get("sort_by") == ["created_at desc"]:
                        versions = versions[::-1]
                    _send(self, 200, {"pipeline_versions": versions})
                elif path == "/experiments":
                    pred = json.loads(query["filter"][0])["predicates"][0]
                    name = pred.get("string_value") or pred.get("stringValue")
                    found = [e for e in api.experiments.values() if e["display_name"] == name]
                    _send(self, 200, {"experiments": found} if found else {})
                elif path == "/recurringruns":
                    _send(self, 200, {"recurringRuns": list(api.recurring.values())})
                else:
                    _send(self, 404, {"error": path})

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
                    _send(self, 200, out or version)
                elif path == "/experiments":
                    exp = json.loads(body)
                    exp["experiment_id"] = f"e{next(ids)}"
                    api.experiments[exp["experiment_id"]] = exp
                    _send(self, 200, exp)
                elif path == "/runs":
                    run = json.loads(body)
                    run["run_id"] = f"r{next(ids)}"
                    api.runs.append(run)
                    _send(self, 200, run)
                elif path == "/recurringruns":
                    job = json.loads(body)
                    job["recurring_run_id"] = f"j{next(ids)}"
                    api.recurring[job["recurring_run_id"]] = job
                    _send(self, 200, job)
                else:
                    _send(self, 404, {"error": path})

            def do_DELETE(self) -> None:
                path, _ = self._parts()
                api.recurring.pop(path.split("/")[-1], None)
                _send(self, 200, {})

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
                    _send(self, 415, {"kind": "Status", "code": 415})
                    return
                doc = yaml.safe_load(self.rfile.read(int(self.headers["Content-Length"])))
                api.applied.append((url.path, query, doc))
                _send(self, 200, doc)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
