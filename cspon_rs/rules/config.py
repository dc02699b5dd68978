"""Typed configs of the warning engine: rule thresholds and the field mapping of bureau layers.

Both are plain pydantic models (:class:`~cspon_rs.config.StrictModel`, unknown keys rejected) loaded from
``configs/rules_default.yaml`` and ``configs/fields_default.yaml``; every value has a default, so
``RulesConfig()`` and ``FieldsConfig()`` are the documented defaults. Areas are in m², distances in metres,
shares in 0..1.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import Field

from cspon_rs.config import StrictModel, load_yaml_config

__all__ = [
    "CATEGORIES",
    "CATEGORY_ZH",
    "CONTROL_KINDS",
    "PERMIT_STATUSES",
    "PERMIT_TYPES",
    "ControlLineFields",
    "FieldsConfig",
    "LanduseFields",
    "PermitFields",
    "RulesConfig",
    "TownshipFields",
    "load_fields_config",
    "load_rules_config",
]

Category = Literal[
    "none",
    "exceeding_approval",
    "building_while_pending",
    "built_before_approval",
    "built_elsewhere",
    "approved_not_built",
    "issued",
]
CATEGORIES: tuple[str, ...] = (
    "none",
    "exceeding_approval",
    "building_while_pending",
    "built_before_approval",
    "built_elsewhere",
    "approved_not_built",
    "issued",
)
#: Chinese names of the categories as used by the bureaus.
CATEGORY_ZH: dict[str, str] = {
    "none": "合法(已批)",
    "exceeding_approval": "少批多建",
    "building_while_pending": "边批边建",
    "built_before_approval": "未批先建",
    "built_elsewhere": "批东建西",
    "approved_not_built": "批而不建",
    "issued": "下发图斑(未检出)",  # an issued 监测图斑 nothing detected (cspon_rs.store.issued), never from the rules
}
PermitType = Literal[
    "land_use_approval", "land_supply", "planning_permit", "temporary_use", "facility_agricultural", "other"
]
PERMIT_TYPES: tuple[str, ...] = (
    "land_use_approval", "land_supply", "planning_permit", "temporary_use", "facility_agricultural", "other"
)
PermitStatus = Literal["pending", "approved", "revoked", "expired"]
PERMIT_STATUSES: tuple[str, ...] = ("pending", "approved", "revoked", "expired")
ControlKind = Literal["YJJBNT", "STBHHX", "CZKFBJ"]
CONTROL_KINDS: tuple[str, ...] = ("YJJBNT", "STBHHX", "CZKFBJ")

def _not_built_types() -> list[PermitType]:
    return ["land_use_approval", "land_supply", "planning_permit"]


def _non_urban_types() -> list[PermitType]:
    return ["facility_agricultural", "temporary_use"]


def _priority_weights() -> dict[ControlKind, float]:
    return {"YJJBNT": 3.0, "STBHHX": 3.0, "CZKFBJ": 1.0}


PermitField = Literal[
    "permit_no", "permit_type", "project", "applicant", "approved_on", "expires_on", "approved_area_m2", "status"
]


def _permit_fields() -> dict[PermitField, str | None]:
    return {
        "permit_no": "PZWH", "permit_type": "LX", "project": "XMMC", "applicant": "YDDW",
        "approved_on": "PZRQ", "expires_on": "YXQZ", "approved_area_m2": "PZMJ", "status": "ZT",
    }


def _control_layers() -> dict[str, ControlKind]:
    return {"YJJBNT": "YJJBNT", "STBHHX": "STBHHX", "CZKFBJ": "CZKFBJ"}


#: The bundled YAML configs (``configs/`` in the repo, ``cspon_rs/configs`` in the wheel).
_DEFAULT_CONFIGS = Path(str(files("cspon_rs.configs")))


class RulesConfig(StrictModel):
    """Thresholds of the warning rules (see ``docs/warnings.md`` for the rules in words)."""

    rule_set_version: str = "2026.1"
    coverage_tolerance_share: float = Field(0.05, ge=0, le=1)
    coverage_tolerance_m2: float = Field(50.0, ge=0)
    min_covered_share: float = Field(0.10, ge=0, le=1)
    built_elsewhere_max_distance_m: float = Field(500.0, ge=0)
    built_elsewhere_max_area_ratio: float | None = Field(None, ge=1)
    not_built_min_age_days: int = Field(730, ge=0)
    not_built_max_share: float = Field(0.05, ge=0, le=1)
    not_built_permit_types: list[PermitType] = Field(default_factory=_not_built_types)
    control_line_min_overlap_m2: float = Field(50.0, ge=0)
    control_line_min_overlap_share: float = Field(0.01, ge=0, le=1)
    urban_boundary_min_outside_m2: float = Field(50.0, ge=0)
    urban_boundary_min_outside_share: float = Field(0.05, ge=0, le=1)
    non_urban_permit_types: list[PermitType] = Field(default_factory=_non_urban_types)
    priority_weights: dict[ControlKind, float] = Field(default_factory=_priority_weights)
    area_weight: float = Field(3.0, ge=0)
    area_cap_mu: float = Field(100.0, gt=0)
    confidence_weight: float = Field(10.0, ge=0)
    link_merge_share: float = Field(0.5, gt=0, le=1)

    def tolerance_m2(self, area: float) -> float:
        """Uncovered area (m²) still accepted as "covered" for a patch of ``area`` m²."""
        return max(self.coverage_tolerance_share * area, self.coverage_tolerance_m2)


class PermitFields(StrictModel):
    """Where the canonical permit fields live in a bureau's permit layer."""

    layer: str | None = "permits"
    default_crs: str | None = "EPSG:4490"
    fields: dict[PermitField, str | None] = Field(default_factory=_permit_fields)
    required: list[str] = Field(default_factory=lambda: ["permit_no", "status"])
    status_values: dict[str, PermitStatus] = Field(default_factory=dict)
    type_values: dict[str, PermitType] = Field(default_factory=dict)


class ControlLineFields(StrictModel):
    """How control lines are stored: one layer per kind, or one layer with a type field."""

    layers: dict[str, ControlKind] = Field(default_factory=_control_layers)
    type_layer: str | None = None
    type_field: str = "KZXLX"
    type_values: dict[str, ControlKind] = Field(default_factory=dict)
    county_field: str | None = "XZQDM"
    version_field: str | None = "VERSION"
    valid_from_field: str | None = "VALID_FROM"
    default_crs: str | None = "EPSG:4490"


class TownshipFields(StrictModel):
    """Township (乡镇/街道) layer: code and name fields."""

    layer: str | None = None
    code_field: str = "XZQDM"
    name_field: str | None = "XZQMC"
    default_crs: str | None = "EPSG:4490"


class LanduseFields(StrictModel):
    """Where the class lives in a land-use layer (``landuse:`` in the field mapping, read by
    :func:`cspon_rs.rules.landuse.load_landuse`).

    ``validate_codes``: check codes against the GB/T 21010 table (``code_table``, default the bundled
    ``configs/landuse_gbt21010.yaml``); false for a layer with another classification, where
    ``cropland_values`` lists its 耕地 classes.
    """

    layer: str | None = "DLTB"
    class_field: str = "DLBM"
    default_crs: str | None = "EPSG:4490"
    validate_codes: bool = True
    code_table: str | None = None
    cropland_values: list[str] = Field(default_factory=list)


class FieldsConfig(StrictModel):
    """Field mapping of all bureau layers (``configs/fields_default.yaml``)."""

    permits: PermitFields = Field(default_factory=PermitFields)
    control_lines: ControlLineFields = Field(default_factory=ControlLineFields)
    townships: TownshipFields = Field(default_factory=TownshipFields)
    landuse: LanduseFields = Field(default_factory=LanduseFields)


def load_rules_config(path: str | Path | None = None) -> RulesConfig:
    """Load rule thresholds from YAML; ``None`` reads the bundled ``configs/rules_default.yaml``."""
    target = Path(path) if path is not None else _DEFAULT_CONFIGS / "rules_default.yaml"
    if path is None and not target.is_file():
        return RulesConfig()
    return load_yaml_config(target, RulesConfig)


def load_fields_config(path: str | Path | None = None) -> FieldsConfig:
    """Load the field mapping from YAML; ``None`` reads the bundled ``configs/fields_default.yaml``."""
    target = Path(path) if path is not None else _DEFAULT_CONFIGS / "fields_default.yaml"
    if path is None and not target.is_file():
        return FieldsConfig()
    return load_yaml_config(target, FieldsConfig)
