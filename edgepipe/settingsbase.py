"""Settings read from env vars: the base both programs' settings share, one-line errors, doc rows.

Each program declares one pydantic-settings model (``EDGEPIPE_ENGINE_*``,
``EDGEPIPE_OPERATOR_*``). This module reads it from a mapping (the process env, or a dict
in tests), turns pydantic's errors into one line per bad value that names the variable,
and lists the model's variables for the generated settings reference.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

import annotated_types
from pydantic import AliasChoices, BeforeValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


class SettingsError(ValueError):
    """Env vars with values that cannot be used: one line per bad value, each naming it."""

    def report(self, program: str) -> str:
        """The lines as a program prints them when it stops: each after its name."""
        return "\n".join(f"{program}: {line}" for line in str(self).splitlines())


def _flag(value: Any) -> Any:
    if isinstance(value, str):
        low = value.strip().lower()
        if low in TRUE_WORDS:
            return True
        if low in FALSE_WORDS:
            return False
        raise ValueError("expected true or false (yes/no, on/off, 1/0)")
    return value


# A boolean setting: exactly these words, so that a typo is refused, never read as false.
Flag = Annotated[bool, BeforeValidator(_flag)]


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env source, reading the mapping it is given (tests pass a dict)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            (key if self.case_sensitive else key.lower()): value
            for key, value in self._env.items()
            if not (self.env_ignore_empty and value == "")
        }


class EnvSettings(BaseSettings):
    """A program's settings. ``from_env`` reads them; constructing one takes only what it
    is given (defaults for the rest), so a test's settings never depend on the caller's env.
    A subclass sets ``env_prefix``; a variable outside it is a field's ``validation_alias``."""

    model_config = SettingsConfigDict(
        frozen=True,
        env_ignore_empty=True,  # VAR= is unset, as in a chart that leaves a value empty
        populate_by_name=True,  # Settings(cpus=2) as well as CONFIG_CPUS=2
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """The settings from ``env`` (default: the process env); SettingsError, one line
        per bad value, when any cannot be used. An empty value counts as unset."""
        source = _MappingEnvSource(cls, os.environ if env is None else env)
        try:
            return cls.model_validate(source())
        except ValidationError as exc:
            raise SettingsError(describe_errors(cls, exc)) from None


def env_names(model_cls: type[BaseSettings], name: str) -> list[str]:
    """The env var(s) that set field ``name``: its aliases, else the prefix and its name."""
    alias = model_cls.model_fields[name].validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    return [model_cls.model_config.get("env_prefix", "") + name.upper()]


def _field_of(model_cls: type[BaseSettings], key: str | int) -> str | None:
    for name in model_cls.model_fields:
        if key == name or key in env_names(model_cls, name):
            return name
    return None


def _base_type(annotation: Any) -> Any:
    """``int`` of ``int | None`` and of ``Annotated[int, ...]``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else annotation
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _bounds(field: FieldInfo) -> str:
    for m in field.metadata:
        if isinstance(m, annotated_types.Gt) and m.gt == 0:
            return "positive "
    return ""


def _at_least(field: FieldInfo) -> str:
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            return f", at least {m.ge}"
    return ""


def expected(field: FieldInfo, error: Mapping[str, Any]) -> str:
    """What a field takes, in words, for the error about one bad value."""
    if error["type"] == "value_error":  # our own validators say it themselves
        return str(error["ctx"]["error"])
    kind = _base_type(field.annotation)
    unit = f" of {_extra(field)['unit']}" if "unit" in _extra(field) else ""
    if kind is bool:
        return "expected true or false (yes/no, on/off, 1/0)"
    if kind is int:
        return f"expected a {_bounds(field)}whole number{unit}{_at_least(field)}"
    if kind is float:
        return f"expected a {_bounds(field)}number{unit}{_at_least(field)}"
    return "expected " + str(error["msg"]).lower()


def describe_errors(model_cls: type[BaseSettings], exc: ValidationError) -> str:
    """pydantic's errors as one line per bad value: ``VAR='value': expected ...``."""
    lines, seen = [], set()
    for error in exc.errors():
        name = _field_of(model_cls, error["loc"][0]) if error["loc"] else None
        if name is None:  # a check across fields: its message says which
            lines.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        if name in seen:  # a union's other members failing too: the first error says it
            continue
        seen.add(name)
        var = env_names(model_cls, name)[0]
        what = expected(model_cls.model_fields[name], error)
        lines.append(f"{var}={error['input']!r}: {what}")
    return "\n".join(lines)


def _extra(field: FieldInfo) -> dict[str, Any]:
    """A field's ``json_schema_extra``: ``unit`` (for errors), ``default_text`` and
    ``type_text`` (for the docs, where the value itself does not say it well)."""
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def _type_text(field: FieldInfo) -> str:
    extra = _extra(field)
    if "type_text" in extra:
        return str(extra["type_text"])
    kind = _base_type(field.annotation)
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}
    return names.get(kind, str(kind))


def _default_text(field: FieldInfo) -> str:
    extra = _extra(field)
    if "default_text" in extra:
        return str(extra["default_text"])
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "(none)"
    if isinstance(default, bool):
        return "true" if default else "false"
    return str(default)


def settings_rows(model_cls: type[BaseSettings]) -> list[dict[str, str]]:
    """One row per setting, in the model's order: ``env`` (the variable; aliases joined by
    ", "), ``default`` (as text), ``description``, ``type`` and ``field`` (its Python name).
    The docs' settings reference is generated from these, so it never drifts."""
    return [
        {
            "env": ", ".join(env_names(model_cls, name)),
            "default": _default_text(field),
            "description": field.description or "",
            "type": _type_text(field),
            "field": name,
        }
        for name, field in model_cls.model_fields.items()
    ]
