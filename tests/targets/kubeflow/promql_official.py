"""Parse PromQL with the Prometheus project's own grammar (@prometheus-io/lezer-promql, via node).

The grammar is the one the Prometheus web UI uses; npm installs a pinned version into a user
cache dir (outside the repo) atomically under a file lock, like tests/editor/lsp.py does for
yaml-language-server. promql_check.mjs (beside this file) parses every expression in one node
process and reports lezer's error nodes. The grammar is syntax only: it does not type-check
(`rate(x)` parses), which is what our own parser (targets/kubeflow/promql.py) adds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no lock; parallel first installs are then the user's risk
    fcntl = None  # type: ignore[assignment]

PACKAGE = "@prometheus-io/lezer-promql"
# pinned (latest on npm when written); SPECML_LEZER_PROMQL_VERSION tries another
VERSION = os.environ.get("SPECML_LEZER_PROMQL_VERSION", "0.315.0")
# its peer dependencies, pinned too so a cache built today parses like one built next year
PEERS = ("@lezer/lr@1.4.12", "@lezer/highlight@1.2.5", "@lezer/common@1.5.5")
SCRIPT = Path(__file__).with_name("promql_check.mjs")


class NpmInstallError(RuntimeError):
    """npm could not install the grammar (the message carries npm's own error)."""


@dataclass(frozen=True)
class OfficialResult:
    """What the official grammar made of one expression."""

    expr: str
    ok: bool
    errors: int
    error_at: int | None  # offset of the first error node
    near: str  # the input from the first error node on (20 chars)
    tree: str  # lezer's tree, for failure messages

    def describe(self) -> str:
        if self.ok:
            return f"{self.expr!r}: parses as {self.tree}"
        return f"{self.expr!r}: syntax error at {self.error_at} near {self.near!r} ({self.tree})"


def missing_tools() -> str | None:
    """Why the official check cannot run here (node/npm missing), or None."""
    if shutil.which("node") is None:
        return "node is not installed: the official PromQL grammar runs on node"
    if shutil.which("npm") is None and installed_version(cache_dir()) != VERSION:
        return f"npm is not installed and {cache_dir()} has no {PACKAGE}@{VERSION}"
    return None


def cache_dir() -> Path:
    """Where npm installs the grammar: $SPECML_PROMQL_CACHE, else the user cache (outside the repo)."""
    if os.environ.get("SPECML_PROMQL_CACHE"):
        return Path(os.environ["SPECML_PROMQL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "specml" / f"lezer-promql-{VERSION}"


def installed_version(cache: Path) -> str | None:
    """The lezer-promql version in the cache, or None."""
    manifest = cache / "node_modules" / "@prometheus-io" / "lezer-promql" / "package.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("version")


def ensure_grammar(cache: Path | None = None) -> Path:
    """Install the pinned grammar with npm unless the cache has it; return the npm prefix.

    npm installs into a staging folder renamed into place when complete, under a file lock,
    so an interrupted install or two test processes at once never leave half a package.
    """
    cache = cache or cache_dir()
    if installed_version(cache) == VERSION:
        return cache
    npm = shutil.which("npm")
    if npm is None:
        raise NpmInstallError("npm is missing")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_version(cache) == VERSION:  # another process installed it meanwhile
            return cache
        staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
        try:
            command = [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
                str(staging),
                f"{PACKAGE}@{VERSION}",
                *PEERS,
            ]
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            if done.returncode != 0 or installed_version(staging) != VERSION:
                tail = "\n".join(done.stderr.strip().splitlines()[-8:])
                raise NpmInstallError(
                    f"`npm {' '.join(command[1:])}` failed (exit {done.returncode}):\n{tail}"
                )
            shutil.rmtree(cache, ignore_errors=True)
            staging.rename(cache)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return cache


def parse_official(expressions: list[str], prefix: Path) -> tuple[str, list[OfficialResult]]:
    """Parse every expression in one node process; return the grammar version and the results."""
    done = subprocess.run(
        ["node", str(SCRIPT), str(prefix)],
        input=json.dumps(expressions),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promql_check.mjs failed (exit {done.returncode}):\n{done.stderr}")
    answer = json.loads(done.stdout)
    results = answer["results"]
    if len(results) != len(expressions):
        raise RuntimeError(
            f"asked about {len(expressions)} expressions, got {len(results)} answers"
        )
    return answer["version"], [
        OfficialResult(
            expr=expr,
            ok=r["ok"],
            errors=r["errors"],
            error_at=None if r["error"] is None else r["error"]["from"],
            near="" if r["error"] is None else r["error"]["near"],
            tree=r["tree"],
        )
        for expr, r in zip(expressions, results, strict=True)
    ]
