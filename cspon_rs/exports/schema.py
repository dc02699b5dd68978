"""Field schema of the bureau 图斑 layer (``configs/export_fields.yaml``) and the Chinese wording of states.

The schema maps columns computed by cspon-rs (``source``) to the 卫片执法 field names: a Shapefile ``code``
(ASCII, at most 10 bytes, the DBF limit) and a Chinese ``alias`` (the GeoPackage column name by default).
"""

from __future__ import annotations

import datetime as dt
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from cspon_rs.config import StrictModel, load_yaml_config
from cspon_rs.errors import ConfigError

__all__ = [
    "RESULT_ZH",
    "STATUS_ZH",
    "UNCONFIGURED_NAME",
    "ExportField",
    "ExportSchema",
    "county_name",
    "load_export_schema",
    "local_time_text",
    "zh_date",
]

#: Warning lifecycle states as bureaus say them.
STATUS_ZH: dict[str, str] = {"new": "待核查", "desk_excluded": "内业排除", "to_field": "待外业", "assigned": "核查中",
                             "verified": "已核查", "closed": "已办结"}
#: Field-check results as bureaus say them (``None``: not checked yet).
RESULT_ZH: dict[str, str] = {"illegal": "违法用地", "legal": "合法用地", "false_change": "伪变化(无实际变化)"}

class ExportField(StrictModel):
    """One field of the 图斑 layer."""

    source: str
    code: str
    alias: str
    type: Literal["str", "int", "float", "date"] = "str"
    width: int = Field(default=0, ge=0, le=254)
    decimals: int = Field(default=0, ge=0, le=15)

    @field_validator("code")
    @classmethod
    def _dbf_name(cls, value: str) -> str:
        if not value.isascii() or not 1 <= len(value.encode()) <= 10 or not value.replace("_", "").isalnum():
            raise ValueError(f"code {value!r}: Shapefile field names are ASCII letters/digits/_ of at most 10 bytes")
        return value


class ExportSchema(StrictModel):
    """The whole schema: fields in order, naming and time zone."""

    timezone: str = "Asia/Shanghai"
    gpkg_names: Literal["alias", "code"] = "alias"
    layer_name: str = "TB"
    county_names: dict[str, str] = Field(default_factory=dict)
    fields: list[ExportField] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone {value!r}: not an IANA zone name (e.g. Asia/Shanghai)") from exc
        return value

    @model_validator(mode="after")
    def _unique(self) -> ExportSchema:
        for attr in ("code", "alias"):
            names = [getattr(f, attr).upper() if attr == "code" else getattr(f, attr) for f in self.fields]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"fields: duplicate {attr} {dupes}")
        return self

    def zone(self) -> ZoneInfo:
        """The configured display time zone."""
        return ZoneInfo(self.timezone)


def load_export_schema(path: str | Path | None = None) -> ExportSchema:
    """Load the 图斑 schema; ``None`` reads the bundled ``configs/export_fields.yaml``.

    Raises:
        MissingFileError, ConfigError: The file is missing or invalid (message names the field).
    """
    target = Path(path) if path is not None else Path(str(files("cspon_rs.configs") / "export_fields.yaml"))
    schema = load_yaml_config(target, ExportSchema)
    if not schema.fields:
        raise ConfigError(f"{target}: no fields; list at least one under 'fields:'")
    return schema


def local_time_text(value: Any, zone: ZoneInfo) -> str | None:
    """A stored timestamp as ``YYYY-MM-DD HH:MM`` in ``zone`` (the one time style of every output; the zone is
    named in the headers and layer notes, never as an abbreviation like "CST"); naive values are taken as UTC."""
    if value is None or value != value:  # None, NaN, NaT
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        return str(value)
    aware = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
    return aware.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def zh_date(value: dt.date | dt.datetime) -> str:
    """A date in Chinese running text: ``2026年12月5日`` (tables and fields use ``2026-12-05``)."""
    return f"{value.year}年{value.month}月{value.day}日"


#: XZQMC of a county missing from ``county_names``.
UNCONFIGURED_NAME = "未配置"


def county_name(schema: ExportSchema, code: str | None) -> str:
    """行政区名称 of a county code from the schema's ``county_names`` (6-digit prefix too), else ``未配置``."""
    if not code:
        return UNCONFIGURED_NAME
    return schema.county_names.get(code) or schema.county_names.get(code[:6]) or UNCONFIGURED_NAME
