"""``--set key=value`` overrides of any training-config field, validated by the pydantic models.

``--set optim.epochs=3 --set data.bands=[B04,B03,B02,B08] --set data.label_map="{0: 0, 1: 1, 2: ignore}"``:
the key is a dotted path into the config (list items by index: ``data.pairs.0.label``), the value is read
as YAML (numbers, booleans, null, lists and mappings), and the whole config is validated afterwards, so a
wrong key or value is an error naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from cspon_rs.errors import ConfigError

__all__ = ["apply_sets", "parse_set"]


def parse_set(item: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], value)`` with the value parsed as YAML.

    Raises:
        ConfigError: No ``=``, an empty key, or a value that is not YAML.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. optim.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from exc
    return key.split("."), value


def apply_sets(data: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set`` items to a raw config mapping (before validation); returns ``data`` (changed in place).

    Missing intermediate mappings are created (``--set augment.flips=false`` without an ``augment`` section).

    Raises:
        ConfigError: A path goes through a value that is not a mapping or list, or a list index is out of range.
    """
    for item in sets:
        path, value = parse_set(item)
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            where = ".".join(path[: depth + 1])
            if isinstance(node, list):
                node = node[_index(part, node, where, item)]
            elif isinstance(node, dict):
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            else:
                raise ConfigError(f"--set {item!r}: {where!r} is a {type(node).__name__}, not a section")
        last = path[-1]
        if isinstance(node, list):
            node[_index(last, node, ".".join(path), item)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {item!r}: {'.'.join(path[:-1])!r} is a {type(node).__name__}, not a section")
    return data


def _index(part: str, node: list[Any], where: str, item: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(f"--set {item!r}: {where!r} needs a list index below {len(node)}")
    return int(part)
