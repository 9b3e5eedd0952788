"""Literal secrets are refused wherever they appear; secret references and look-alikes pass."""

from __future__ import annotations

import pytest
from specml.compiler.api import validate_text
from specml.compiler.errors import SpecError
from specml.compiler.secret_scan import secret_kind

BASE = """\
apiVersion: specml/v1
kind: MLSystem
metadata:
  name: mini
  owner: team-ml
  labels: LABELS
data:
  sources:
    events: {format: parquet, path: data/events.parquet, timestamp: event_ts}
features:
  entities:
    user: {join_keys: [user_id]}
  views:
    stats: {entity: user, source: events, ttl: 7d, fields: {clicks: int64}}
  label: {source: events, field: converted}
training:
  task: binary_classification
  model: {type: mlp}
targets:
  kubeflow:
    image: IMAGE
"""

SECRETS = [
    ("password", "hunter2", "a credential"),
    ("db_password", "x", "a credential"),
    ("private_key", "c2VjcmV0LWtleS1ieXRlcw==", "a credential"),
    ("apiKey", "abc", "a credential"),
    ("client_secret", 123456, "a credential"),
    ("authorization", "Bearer eyJhbGciOi.abc123", "a bearer token"),
    ("note", "send Authorization: Bearer 9f8e7d6c5b4a", "a bearer token"),
    ("note", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345", "an API secret key"),
    ("note", "sk-AbCdEfGhIjKlMnOpQrStUvWx", "an API secret key"),
    ("note", "sk_live_51HabcdefghijKLMNOP", "a Stripe secret key"),
    ("note", "rk_test_51HabcdefghijKLMNOP", "a Stripe secret key"),
    ("note", "github_pat_11ABCDEFG0_abcdefghijklmnopqrstuvwxyz", "a GitHub token"),
    ("note", "ghp_" + "a1B2c3D4e5" * 4, "a GitHub token"),
    ("note", "AIzaSyA1234567890abcdefghijklmnopqrstuv", "a Google API key"),
    ("note", "xoxb-1234567890-abcdefghij", "a Slack token"),
    ("note", "xoxp-1234567890-abcdefghij", "a Slack token"),
    ("note", "AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
    ("note", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r\n", "a private key"),
    ("note", "-----BEGIN PGP PRIVATE KEY BLOCK-----", "a private key"),
    ("note", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7", "a private key"),
    ("note", "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun", "a private key"),
    ("note", "https://admin:hunter2@minio.internal/x", "a URL with an embedded password"),
    ("image", "bob:s3cret@ghcr.io/acme/runtime:1.0", "a reference with an embedded password"),
    ("note", "postgresql://ml:pw@db:5432/features", "a URL with an embedded password"),
    ("note", "https://api.example.com/v1?api_key=abc123", "a URL with a credential in its query"),
]

NOT_SECRETS = [
    ("token_ttl", 3600),
    ("password_required", True),
    ("secret_level", "high"),
    ("description", "Bearer authentication with rotating tokens"),
    ("description", "contact: ops@acme.com"),
    ("note", "sklearn baseline"),
    ("note", "sk-short"),
    ("image", "ghcr.io/acme/runtime:1.0@sha256:" + "ab" * 32),
    ("image", "localhost:5000/acme/runtime:1.0"),
    ("url", "https://user@example.com/path"),
    ("storage_uri", "s3://bucket/models"),
    ("password", ""),
    ("token", None),
]


@pytest.mark.parametrize(("key", "value", "what"), SECRETS)
def test_secret_values_are_recognised(key: str, value: object, what: str) -> None:
    assert secret_kind(key, value) == what


@pytest.mark.parametrize(("key", "value"), NOT_SECRETS)
def test_look_alikes_are_not_secrets(key: str, value: object) -> None:
    assert secret_kind(key, value) is None


def _spec(labels: str = "{team: growth}", image: str = "ghcr.io/acme/runtime:1.0") -> str:
    return BASE.replace("LABELS", labels).replace("IMAGE", image)


def test_a_clean_spec_with_secret_references_passes() -> None:
    text = _spec(labels="{team: growth, token_ttl: '3600', secret_level: high}").replace(
        "    image: ghcr.io",
        "    image_pull_secret: {secret: regcred}\n    image: ghcr.io",
    )
    validate_text(text)


@pytest.mark.parametrize(
    ("labels", "image", "path", "line", "col", "what"),
    [
        ("{password: hunter2}", None, "metadata.labels.password", 6, 22, "a credential"),
        (
            "{auth_header: 'Bearer 0a1b2c3d4e5f'}",
            None,
            "metadata.labels.auth_header",
            6,
            25,
            "a bearer token",
        ),
        (None, "u:p4ss@ghcr.io/acme/runtime:1.0", "targets.kubeflow.image", 21, 12, "password"),
    ],
)
def test_a_literal_secret_is_refused_at_its_line(
    labels: str | None, image: str | None, path: str, line: int, col: int, what: str
) -> None:
    text = _spec(labels or "{team: growth}", image or "ghcr.io/acme/runtime:1.0")
    with pytest.raises(SpecError) as info:
        validate_text(text, file="s.yaml")
    found = [d for d in info.value.errors if d.code == "secret"]
    assert [(d.yaml_path, d.line, d.col) for d in found] == [(path, line, col)]
    assert what in found[0].message and "{env: NAME}" in (found[0].hint or "")


def test_no_spec_field_that_takes_a_plain_value_is_named_like_a_secret() -> None:
    """A field named like a credential must take a secret reference, or every value in it would
    be refused as a literal secret."""
    from specml.compiler.docs import all_fields
    from specml.compiler.secret_scan import _is_secret_key

    named = [f for f in all_fields() if _is_secret_key(f.key)]
    assert named, "the walk finds the reference fields"
    for f in named:
        assert f.path.endswith(".secret") or "Secret" in f.type, (f.path, f.type)
