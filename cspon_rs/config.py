"""Base class and YAML loading for typed configs.

Configs only wire steps together: every step is a plain function that can be called without one.
All configs forbid unknown keys, so a typo in a YAML file is an error that names the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cspon_rs.errors import ConfigError, MissingFileError

__all__ = ["StrictModel", "format_validation_error", "load_yaml_config"]


class StrictModel(BaseModel):
    """Pydantic model that rejects unknown keys and validates on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def format_validation_error(error: ValidationError, source: str) -> str:
    """Turn a pydantic ValidationError into one readable line per problem.

    Args:
        error: The pydantic error.
        source: Where the data came from (a file path or "request"), used as prefix.

    Returns:
        A message such as ``configs/x.yaml: training.epochs: Input should be greater than 0 (got -1)``.
    """
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key {loc!r} (remove it or check its spelling)")
        else:
            lines.append(f"{source}: {loc}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(lines)


def load_yaml_config(path: str | Path, model: type[ConfigT], overrides: dict[str, Any] | None = None) -> ConfigT:
    """Read a YAML file into a typed config.

    Args:
        path: YAML file.
        model: The pydantic model class to validate against.
        overrides: Top-level keys that replace the file's values (e.g. from CLI flags).

    Returns:
        The validated config.

    Raises:
        MissingFileError: The file does not exist.
        ConfigError: The YAML does not parse or does not validate; the message names the key.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    if overrides:
        data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from exc
