"""The base of every spec document (camelCase aliases, no unknown fields, immutable), the
error that names a bad field, and the name and quantity patterns the documents share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# The custom resources' group and version, and the pipeline config's apiVersion: defined
# once here, the base every spec document imports (edgepipe.resources re-exports them).
GROUP = "edgepipe.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PipelineConfig"

# A pipeline name becomes `<name>-engine` (a Service, a DNS-1035 label of at most 63).
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 56
SHA256_PATTERN = r"^[a-f0-9]{64}$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|E|Ei|P|Pi)?$"

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=NAME_MAX)]


class ConfigError(ValueError):
    """A pipeline config that does not validate; ``field`` is the dotted path of the bad field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class SpecModel(BaseModel):
    """The base of every spec document: camelCase aliases, no unknown fields, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )
