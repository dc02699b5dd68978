"""Field reference of the training config, generated from its pydantic models (``cspon-rs config schema``).

``docs/config_reference.md`` is this module's output (a test checks it is current).
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = ["config_models", "config_reference", "config_schema_json"]


def config_models() -> list[tuple[str, type[BaseModel]]]:
    """``(key path, model)`` of every section of a training config, in reading order."""
    from cspon_rs.training.config import (
        AugmentConfig,
        DataConfig,
        ModelConfig,
        OptimConfig,
        OutputConfig,
        PairSpec,
        SourceConfig,
        SyntheticConfig,
        TrainConfig,
    )

    return [
        ("(top level)", TrainConfig),
        ("data", DataConfig),
        ("data.pairs[]", PairSpec),
        ("data.extra_sources[]", SourceConfig),
        ("data.synthetic", SyntheticConfig),
        ("model", ModelConfig),
        ("augment", AugmentConfig),
        ("optim", OptimConfig),
        ("output", OutputConfig),
    ]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined:
        if field.default_factory is None:
            return "**required**"
        value = field.default_factory()
        return "(section defaults)" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"
    value = field.default
    plain = isinstance(value, int | float | str | bool) or value is None
    return f"`{json.dumps(value if plain else str(value))}`"


def config_reference() -> str:
    """Markdown field reference of the training config (every field: type, default, description)."""
    lines = [
        "# Training config reference",
        "",
        "Generated from the pydantic models in `cspon_rs.training.config` by `cspon-rs config schema`; do not",
        "edit by hand. Unknown keys are rejected by name. Any field can be set without YAML:",
        "`cspon-rs train --pairs pairs.csv --set optim.epochs=3 --set data.label_map=\"{0: 0, 1: 1, 2: ignore}\"`",
        "(dotted key, YAML value, validated like the file). Relative paths resolve against the config file's",
        "folder (a pairs CSV's folder with `--pairs`).",
        "",
    ]
    for path, model in config_models():
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        lines += [f"## `{path}` ({model.__name__})", "", doc, "", "| key | type | default | description |",
                  "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
        lines.append("")
    from cspon_rs.training.pairs_csv import CSV_COLUMNS

    lines += [
        "## Pairs CSV (`cspon-rs train --pairs`)",
        "",
        f"Columns: {', '.join(f'`{c}`' for c in CSV_COLUMNS)}. `before`, `after` and `label` are required; a "
        "`label` ending in `.gpkg`, `.shp`, `.geojson`... is read as change polygons, anything else as a "
        "raster. `split` is train/val/test (empty: train), `pixel_size` in metres, `window` is "
        "`col row width height` on the date-1 grid. `cspon-rs dataset init DIR` writes one.",
        "",
    ]
    return "\n".join(lines)


def config_schema_json() -> str:
    """The JSON Schema of :class:`~cspon_rs.training.config.TrainConfig` (for editors)."""
    from cspon_rs.training.config import TrainConfig

    return json.dumps(TrainConfig.model_json_schema(), indent=2) + "\n"
