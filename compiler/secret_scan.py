"""Literal secrets in a spec: specs hold only references (`{env: NAME}` / `{secret: name}`).

Two signals, either enough: a value that looks like a credential wherever it is (a known token
prefix, a bearer token, a private key, a password in a URL), or any literal value under a key
whose name says it holds one (`password: hunter2`, `private_key: ...`), however short.
"""

from __future__ import annotations

import re
from typing import Any

from specml.compiler.compose import Composed
from specml.compiler.errors import Diagnostic, YamlPath

# (pattern, what it is); checked in order, the first match names the finding.
SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----"), "a private key"),
    # base64 DER of a private key pasted without its PEM armour: SEQUENCE, version 0, then an
    # INTEGER (PKCS#1) or an algorithm SEQUENCE (PKCS#8); `MHcCAQEE` is SEC1 (EC)
    (
        re.compile(r"\b(MII[A-Za-z0-9+/]{3}IBA(AK|DAN)|MHcCAQEE)[A-Za-z0-9+/]{20,}"),
        "a private key",
    ),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), "a GitHub token"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"), "a GitHub token"),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), "a GitLab token"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(r"\b[sr]k_(live|test)_[A-Za-z0-9]{10,}"), "a Stripe secret key"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), "a Google API key"),
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), "a Hugging Face token"),
    (re.compile(r"\bnpm_[A-Za-z0-9]{30,}"), "an npm token"),
    (re.compile(r"\bsk-(proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"), "an API secret key"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), "a JWT"),
    # an Authorization header value: a token with a digit in it, or a long one
    (
        re.compile(
            r"\b(bearer|basic|token)\s+(?=[A-Za-z0-9._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}"
            r"|\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{20,}",
            re.I,
        ),
        "a bearer token",
    ),
    (re.compile(r"hooks\.slack\.com/services/\S+"), "a Slack webhook URL"),
    (re.compile(r"://[^/\s:@]+:[^/\s@]+@"), "a URL with an embedded password"),
    # `user:pass@registry/image`: userinfo without a scheme (an image reference, a DSN)
    (
        re.compile(r"(^|\s)[^/\s:@]+:[^/\s@]+@[A-Za-z0-9.-]+"),
        "a reference with an embedded password",
    ),
    (
        re.compile(
            r"(?i)[?&;](password|passwd|pwd|secret|token|api_?key|access_?token)=[^&\s]{3,}"
        ),
        "a URL with a credential in its query",
    ),
]

# A key that names a credential: its last word (snake, kebab or camel case) is one of these.
_SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api_key",
    "access_key",
    "secret_key",
    "private_key",
    "client_secret",
    "authorization",
    "credential",
    "credentials",
    "bearer",
)
_SECRET_KEY_RE = re.compile(r"(^|_)(" + "|".join(_SECRET_WORDS) + r")$")


def _is_secret_key(key: str) -> bool:
    """`db_password`, `apiKey`, `authorization`; not `token_ttl` or `password_required`."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower().replace("-", "_").replace(".", "_")
    return bool(_SECRET_KEY_RE.search(words))


def secret_kind(key: str | int | None, value: Any) -> str | None:
    """What a literal value looks like (`a GitHub token`), or None when it is no secret."""
    if isinstance(value, str):
        found = next((label for rx, label in SECRET_PATTERNS if rx.search(value)), None)
        if found:
            return found
    literal = (isinstance(value, str) and value.strip() != "") or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )
    if literal and isinstance(key, str) and _is_secret_key(key):
        return "a credential"
    return None


def _is_reference(node: dict[Any, Any]) -> bool:
    """`{env: NAME}` / `{secret: name}`: the name of a secret, not its value."""
    return len(node) == 1 and next(iter(node)) in ("env", "secret")


def scan_secrets(composed: Composed) -> list[Diagnostic]:
    """Refuse literal credentials anywhere in the document: specs hold only secret references."""
    found: list[Diagnostic] = []

    def visit(node: Any, path: YamlPath) -> None:
        if isinstance(node, dict):
            if _is_reference(node):
                return
            for k, v in node.items():
                visit(v, (*path, k))
            return
        if isinstance(node, list):
            for i, v in enumerate(node):
                visit(v, (*path, i))
            return
        what = secret_kind(path[-1] if path else None, node)
        if what:
            found.append(
                composed.diagnostic(
                    path,
                    f"this value looks like {what}; specs never hold secret values",
                    hint="reference it instead: `{env: NAME}` or `{secret: name}`",
                    code="secret",
                    stage="check",
                )
            )

    visit(composed.data, ())
    return found
