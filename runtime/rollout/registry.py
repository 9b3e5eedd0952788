"""Where promotion and rejection land: an injectable registry, MLflow aliases for real."""

from __future__ import annotations

from typing import Protocol

REJECTED_TAG = "specml.rejected_reason"
PROMOTED_TAG = "specml.promoted_reason"
PREVIOUS_CHAMPION_TAG = "specml.previous_champion"


class ModelRegistry(Protocol):
    """What the rollout controller needs from a model registry."""

    def version_for(self, model: str, alias: str) -> str | None:
        """The version an alias points at, or None."""
        ...

    def promote(self, model: str, version: str, reason: str) -> None:
        """Make `version` the champion."""
        ...

    def reject(self, model: str, version: str, reason: str) -> None:
        """Mark `version` rejected with a reason; it must not stay the challenger."""
        ...


class MlflowRegistry:
    """MLflow model registry: `champion`/`challenger` aliases and `specml.*` version tags."""

    def __init__(
        self,
        tracking_uri: str,
        champion_alias: str = "champion",
        challenger_alias: str = "challenger",
    ):
        self.tracking_uri = tracking_uri
        self.champion_alias = champion_alias
        self.challenger_alias = challenger_alias
        self._client = None

    @property
    def client(self):  # type: ignore[no-untyped-def]
        """The MlflowClient (mlflow imported on first use only)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def version_for(self, model: str, alias: str) -> str | None:
        """The version an alias points at, or None when the alias is not set."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(model, alias).version)
        except MlflowException:
            return None

    def promote(self, model: str, version: str, reason: str) -> None:
        """Tag why and who it replaced, point `champion` at the version, drop `challenger` from it.

        Safe to redo after a crash at any point: the tags are written before the alias moves, an
        alias already on the version is left alone."""
        version = str(version)
        previous = self.version_for(model, self.champion_alias)
        if previous != version:
            self.client.set_model_version_tag(model, version, PROMOTED_TAG, reason)
            if previous is not None:
                self.client.set_model_version_tag(model, version, PREVIOUS_CHAMPION_TAG, previous)
            self.client.set_registered_model_alias(model, self.champion_alias, version)
        if self.version_for(model, self.challenger_alias) == version:
            self.client.delete_registered_model_alias(model, self.challenger_alias)

    def reject(self, model: str, version: str, reason: str) -> None:
        """Tag the version `specml.rejected_reason` and take `challenger` off it (champion stays);
        safe to redo."""
        self.client.set_model_version_tag(model, version, REJECTED_TAG, reason)
        if self.version_for(model, self.challenger_alias) == str(version):
            self.client.delete_registered_model_alias(model, self.challenger_alias)


class MemoryRegistry:
    """An in-memory registry for tests and dry runs: aliases and tags in dicts."""

    def __init__(self, aliases: dict[str, str] | None = None):
        self.aliases: dict[str, str] = dict(aliases or {})
        self.tags: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, str, str]] = []

    def version_for(self, model: str, alias: str) -> str | None:
        """The version an alias points at."""
        return self.aliases.get(alias)

    def promote(self, model: str, version: str, reason: str) -> None:
        """Move `champion` to the version."""
        self.calls.append(("promote", version, reason))
        self.aliases["champion"] = version
        if self.aliases.get("challenger") == version:
            del self.aliases["challenger"]
        self.tags.setdefault(version, {})[PROMOTED_TAG] = reason

    def reject(self, model: str, version: str, reason: str) -> None:
        """Tag the version rejected."""
        self.calls.append(("reject", version, reason))
        self.tags.setdefault(version, {})[REJECTED_TAG] = reason
        if self.aliases.get("challenger") == version:
            del self.aliases["challenger"]
