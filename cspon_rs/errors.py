"""All exceptions raised by cspon-rs.

Every exception inherits :class:`CsponError` *and* the builtin it specialises, so callers can catch
either ``CsponError`` (anything from this package) or the familiar builtin (``ValueError``,
``FileNotFoundError``...). Messages name the file, field or value at fault and, where one exists, the fix.
The CLI turns any ``CsponError`` into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations


class CsponError(Exception):
    """Base class of every error raised on purpose by cspon-rs."""


class InputFileError(CsponError, OSError):
    """A file is missing, unreadable or not in the expected format."""


class MissingFileError(InputFileError, FileNotFoundError):
    """A file or folder that the step needs does not exist."""


class CorruptFileError(InputFileError):
    """A file exists but cannot be read as the expected format."""


class CRSError(CsponError, ValueError):
    """A dataset has no CRS, or one that cannot be used for the operation."""


class CRSMismatchError(CRSError):
    """Two datasets that must share a CRS do not, and cannot be reprojected automatically."""


class GridMismatchError(CsponError, ValueError):
    """Two rasters do not overlap, or their grids cannot be aligned."""


class BandMismatchError(CsponError, ValueError):
    """A raster's bands do not match what a checkpoint or step expects."""


class InputRangeError(BandMismatchError):
    """A scene's pixels cannot feed the model: a constant band, (almost) all nodata (radiometry checks)."""


class ConfigError(CsponError, ValueError):
    """A configuration file or value is invalid (unknown key, bad type, out of range)."""


class SchemaError(CsponError, ValueError):
    """A vector layer or table lacks a required field, or a value in it cannot be parsed."""


class LabelError(CsponError, ValueError):
    """A label raster holds values other than the documented ones (0/1 or 0/255)."""


class TrainingError(CsponError, RuntimeError):
    """Training cannot continue (for example the loss became NaN)."""


class CheckpointError(CsponError, ValueError):
    """A checkpoint is missing, incomplete, or does not fit the model/bands it is used with."""


class StoreError(CsponError, RuntimeError):
    """The warning store refused an operation (conflict, unknown id, bad transition)."""


class NotFoundError(StoreError, LookupError):
    """A record (warning, job, scene, user) does not exist."""


class ConflictError(StoreError):
    """A concurrent or repeated change conflicts with the stored state (e.g. two verifications)."""


class InvalidTransitionError(StoreError, ValueError):
    """A warning status change that the lifecycle does not allow."""


class MissingDependencyError(CsponError, ImportError):
    """An optional package (e.g. the one holding pretrained weights) is not installed; the message names it."""


class PromotionRefusedError(ConflictError):
    """A promotion or rollback the model registry refuses (not better, other bands, checkpoint changed)."""
