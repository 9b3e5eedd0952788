"""A minimal Language Server Protocol client over stdio, enough to drive yaml-language-server."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no lock; parallel first installs are then the user's risk
    fcntl = None  # type: ignore[assignment]

# pinned: the editor behaviour the tests assert (also checked with 2.0.0); SPECML_LSP_VERSION tries another
LSP_VERSION = os.environ.get("SPECML_LSP_VERSION", "1.25.0")


def cache_dir() -> Path:
    """Where npm installs the server: $SPECML_LSP_CACHE, else the user cache (outside the repo)."""
    if os.environ.get("SPECML_LSP_CACHE"):
        return Path(os.environ["SPECML_LSP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "specml" / f"yaml-language-server-{LSP_VERSION}"


def server_script(cache: Path) -> Path:
    return cache / "node_modules" / "yaml-language-server" / "bin" / "yaml-language-server"


def installed_version(cache: Path) -> str | None:
    """The yaml-language-server version in the cache, or None."""
    manifest = cache / "node_modules" / "yaml-language-server" / "package.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("version")


def ensure_server(cache: Path | None = None) -> Path:
    """Install the pinned yaml-language-server with npm unless the cache has it; return its script.

    npm installs into a staging folder that is renamed into place when complete, under a file
    lock, so an interrupted install or two test processes at once never leave half a server.
    """
    cache = cache or cache_dir()
    if installed_version(cache) == LSP_VERSION and server_script(cache).is_file():
        return server_script(cache)
    npm = shutil.which("npm")
    assert npm, "npm is missing"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_version(cache) != LSP_VERSION or not server_script(cache).is_file():
            staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
            try:
                done = subprocess.run(
                    [
                        npm,
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--no-save",
                        "--prefix",
                        str(staging),
                        f"yaml-language-server@{LSP_VERSION}",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                if done.returncode != 0:
                    tail = "\n".join(done.stderr.strip().splitlines()[-5:])
                    raise RuntimeError(f"npm install failed (exit {done.returncode}):\n{tail}")
                shutil.rmtree(cache, ignore_errors=True)
                staging.rename(cache)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return server_script(cache)


class LspClient:
    """Talks JSON-RPC with a language server child process; answers its requests minimally."""

    def __init__(self, command: list[str], settings: dict[str, Any]) -> None:
        self.settings = settings
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._next_id = 0
        self._responses: dict[int, Any] = {}
        self._notifications: queue.Queue[dict[str, Any]] = queue.Queue()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # --- wire ---------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.proc.stdin.flush()

    def _read_message(self) -> dict[str, Any] | None:
        stream = self.proc.stdout
        assert stream is not None
        length = None
        while True:
            line = stream.readline()
            if not line:
                return None
            line = line.strip()
            if not line:
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value.strip())
        assert length is not None
        return json.loads(stream.read(length))

    def _read_loop(self) -> None:
        while (message := self._read_message()) is not None:
            if "id" in message and "method" in message:
                self._answer(message)
            elif "id" in message:
                with self._cond:
                    self._responses[message["id"]] = message
                    self._cond.notify_all()
            else:
                self._notifications.put(message)

    def _answer(self, request: dict[str, Any]) -> None:
        """Server-to-client requests: configuration gets our settings, the rest a null result."""
        result: Any = None
        if request["method"] == "workspace/configuration":
            result = [
                self.settings.get(item.get("section", ""), None)
                for item in request["params"]["items"]
            ]
        self._send({"id": request["id"], "result": result})

    # --- API ----------------------------------------------------------------------------
    def request(self, method: str, params: Any, timeout: float = 30) -> Any:
        """Send a request and wait for its result."""
        self._next_id += 1
        rid = self._next_id
        self._send({"id": rid, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        with self._cond:
            while rid not in self._responses:
                left = deadline - time.monotonic()
                assert left > 0, f"no answer to {method} within {timeout}s"
                self._cond.wait(left)
            response = self._responses.pop(rid)
        assert "error" not in response, response["error"]
        return response.get("result")

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def initialize(self, root: Path) -> Any:
        """initialize + initialized + push the settings (workspace/didChangeConfiguration)."""
        result = self.request(
            "initialize",
            {
                "processId": None,
                "rootUri": root.as_uri(),
                "capabilities": {
                    "textDocument": {
                        "hover": {"contentFormat": ["markdown", "plaintext"]},
                        "completion": {"completionItem": {"documentationFormat": ["markdown"]}},
                        "publishDiagnostics": {"relatedInformation": True},
                    },
                    "workspace": {"configuration": True},
                },
            },
        )
        self.notify("initialized", {})
        self.notify("workspace/didChangeConfiguration", {"settings": self.settings})
        return result

    def open(self, path: Path, text: str | None = None) -> str:
        uri = path.resolve().as_uri()
        self.notify(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": uri,
                    "languageId": "yaml",
                    "version": 1,
                    "text": path.read_text() if text is None else text,
                }
            },
        )
        return uri

    def diagnostics(
        self, uri: str, timeout: float = 30, settle: float = 0.4
    ) -> list[dict[str, Any]]:
        """The last diagnostics published for `uri` once the server has gone quiet for `settle` s."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] | None = None
        while True:
            wait = settle if found is not None else deadline - time.monotonic()
            assert wait > 0, f"no diagnostics for {uri} within {timeout}s"
            try:
                message = self._notifications.get(timeout=wait)
            except queue.Empty:
                if found is not None:
                    return found
                raise AssertionError(f"no diagnostics for {uri} within {timeout}s") from None
            if (
                message.get("method") == "textDocument/publishDiagnostics"
                and message["params"]["uri"] == uri
            ):
                found = message["params"]["diagnostics"]

    def close(self) -> None:
        try:
            self.request("shutdown", None, timeout=5)
            self.notify("exit", None)
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=5)
