"""References to Secrets in a custom resource's spec, and the rule that keeps them in the
resource's own namespace (the engine's API token reference too)."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel, Field

from .spec import ConfigError, SpecModel


class SecretRef(SpecModel):
    """A Secret in the object's own namespace."""

    name: str = Field(description="Secret in the object's own namespace.")
    namespace: str | None = Field(
        default=None,
        description="Leave it out. Secrets are read only from the object's own namespace; "
        "any other is refused.",
    )


class TokenSecretRef(SecretRef):
    """The Secret with the engine's API tokens."""

    key: str = Field(
        default="token", min_length=1, description="The key holding the token(s), one a line."
    )


class EngineAuth(SpecModel):
    """Who may call a Pipeline's engine."""

    token_secret_ref: TokenSecretRef | None = Field(
        default=None,
        description="Secret with the engine's API token(s): every request but /health/* "
        "then needs 'Authorization: Bearer <token>'. Mounted as a file, so that a rotated "
        "Secret reaches running engines without a restart.",
    )
    metrics_auth: bool = Field(
        default=True,
        description="With a token, /metrics needs it too; false leaves /metrics open for a "
        "scraper without it (EDGEPIPE_ENGINE_METRICS_AUTH).",
    )


class ForeignSecret(ConfigError):
    """A Secret reference that names another namespace."""

    reason = "InvalidSpec"  # a Publish's status reason: its own spec is wrong


def secret_refs(model: BaseModel, path: str) -> Iterator[tuple[str, SecretRef]]:
    """Every SecretRef in ``model``, with its path in the user's (camelCase) words."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        at = f"{path}.{info.alias or name}"
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            where = at if i is None else f"{at}[{i}]"
            if isinstance(item, SecretRef):
                yield where, item
            elif isinstance(item, BaseModel):
                yield from secret_refs(item, where)


def check_own_namespace(spec: BaseModel, namespace: str, kind: str) -> None:
    """ForeignSecret naming the field when a reference names a namespace not the object's."""
    for where, ref in secret_refs(spec, "spec"):
        if ref.namespace is not None and ref.namespace != namespace:
            raise ForeignSecret(
                f"{where}.namespace: {ref.namespace!r} is not this {kind}'s namespace "
                f"{namespace!r}; a {kind} reads Secrets only from its own namespace "
                "(leave namespace out)",
                f"{where}.namespace",
            )
