"""Load a config tree from YAML plus `dotted.key=value` overrides, with errors that
name the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from mogrpo.errors import UserError

T = TypeVar("T", bound=BaseModel)


class ConfigError(UserError, ValueError):
    """A config file or override is malformed, unknown, or out of range."""


def read_yaml(path: str | Path) -> dict:
    """Parse a YAML mapping, naming the file (and line) on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError(f"malformed YAML in {path}{where}: {getattr(err, 'problem', err)}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def apply_override(tree: dict, override: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (`1e-6`, `true`, `[1,2]`)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form dotted.key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {override!r} has an empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML: {err}") from err
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `key.path: message (got value)`."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        else:
            msg = e["msg"]
        got = e.get("input")
        got_text = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{got_text}")
    return f"invalid config from {source}:\n" + "\n".join(lines)


def build(model_cls: type[T], data: dict, source: str) -> T:
    """Validate `data` into `model_cls`, turning pydantic's error into a ConfigError."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_yaml_section(model_cls: type[T], path: str | Path | None,
                      overrides: list[str] | tuple[str, ...] = ()) -> T:
    """A config of type `model_cls` from `path` (the class's defaults when None) and overrides."""
    data = read_yaml(path) if path is not None else {}
    for override in overrides:
        apply_override(data, override)
    source = str(path) if path is not None else "defaults"
    if overrides:
        source += " + overrides " + " ".join(overrides)
    return build(model_cls, data, source)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """The run config (`RunConfig`) from `path` (or the embedded defaults) and overrides."""
    from mogrpo.config.run import RunConfig

    return load_yaml_section(RunConfig, path, overrides)


def to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML, to save beside a run's outputs."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
