"""Synthetic change pairs from real imagery: pasted change instances and hard no-change pairs.

The labelled data is tiny (a few LEVIR/DSIFN crops, a handful of OSCD cities), so a network soon learns it
by heart. Two kinds of synthetic crops, built only from training pairs and unlabelled host images, widen
what it sees:

* **Pasted change** -- a host crop is paired with a photometrically perturbed copy of itself (another
  "date"), and 1..N labelled change instances of the *training* pairs are pasted into that date-2 copy:
  the instance's date-2 pixels with a context margin (shadows, yards), colour-matched to the host and
  blended through a feathered mask. The label is the instance's own change mask. Now and then an instance
  is pasted into *both* dates (an existing building: no change), so "a building" alone is never a cue.
* **Hard no-change** -- a host crop against a perturbed copy of itself: gain, gamma, offset, blur, noise
  and a sub-pixel shift (season, sun angle, sensor, registration error), label all zero.

Everything is drawn from one ``numpy.random.Generator`` (reproducible). Pixel values stay in the data's raw
units (8-bit RGB, Sentinel-2 digital numbers...), so hosts must share bands and units with the training
pairs. Test images must never be hosts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from cspon_rs.errors import MissingFileError

if TYPE_CHECKING:
    from cspon_rs.training.datasets import ChangePair

__all__ = ["ChangeInstance", "SyntheticSampler", "extract_instances", "load_host_images", "perturb_date"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class ChangeInstance:
    """One labelled change object cut out of a training pair, with a context margin.

    Attributes:
        before: ``(C, h, w)`` date-1 pixels of the box (raw units).
        after: ``(C, h, w)`` date-2 pixels of the box.
        mask: ``(h, w)`` bool, the labelled change inside the box.
        alpha: ``(h, w)`` float32 blending weight: 1 on the dilated object, fading to 0 at the box edge.
    """

    before: np.ndarray
    after: np.ndarray
    mask: np.ndarray
    alpha: np.ndarray


def extract_instances(
    pairs: Sequence[ChangePair], *, min_px: int = 16, margin: int = 6, max_edge: int = 160
) -> list[ChangeInstance]:
    """Cut every labelled change component (8-connected) of ``pairs`` into a :class:`ChangeInstance`.

    Args:
        pairs: :class:`~cspon_rs.training.datasets.ChangePair` objects (training split only).
        min_px: Components smaller than this many pixels are skipped.
        margin: Context kept around each component (pixels).
        max_edge: Components whose box is larger than this are skipped (whole-crop changes).
    """
    out: list[ChangeInstance] = []
    for pair in pairs:
        label = (pair.label > 0) & pair.valid
        comps, n = ndimage.label(label, structure=np.ones((3, 3)))
        if n == 0:
            continue
        h, w = label.shape
        for k, sl in enumerate(ndimage.find_objects(comps), start=1):
            if sl is None:
                continue
            obj = comps[sl] == k
            if obj.sum() < min_px:
                continue
            y0, y1 = max(sl[0].start - margin, 0), min(sl[0].stop + margin, h)
            x0, x1 = max(sl[1].start - margin, 0), min(sl[1].stop + margin, w)
            if max(y1 - y0, x1 - x0) > max_edge:
                continue
            mask = comps[y0:y1, x0:x1] == k
            grown = ndimage.binary_dilation(mask, iterations=max(margin // 2, 1))
            alpha = ndimage.gaussian_filter(grown.astype(np.float32), sigma=max(margin / 3.0, 0.8))
            alpha = np.clip(alpha * 1.5, 0.0, 1.0)
            alpha[mask] = 1.0
            out.append(
                ChangeInstance(
                    before=pair.before[:, y0:y1, x0:x1].astype(np.float32),
                    after=pair.after[:, y0:y1, x0:x1].astype(np.float32),
                    mask=mask,
                    alpha=alpha.astype(np.float32),
                )
            )
    return out


def _image_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if path.is_file():
        return [path]
    raise MissingFileError(f"{path}: synthetic host image or folder not found (data.synthetic.hosts)")


def load_host_images(paths: Sequence[Path], bands: Sequence[int] | None = None) -> list[np.ndarray]:
    """Read host images (PNG/JPG/BMP via Pillow, GeoTIFF via rasterio) as ``(C, H, W)`` float32.

    Args:
        paths: Files, or folders whose image files are all read (not recursive).
        bands: 1-based bands to keep (default: all; an RGBA PNG's alpha is dropped).
    """
    from cspon_rs.training.datasets import _read_image

    images = []
    for path in paths:
        for f in _image_files(Path(path)):
            img = _read_image(f)
            if bands is not None:
                if max(bands) > img.shape[0]:
                    raise MissingFileError(f"{f}: has {img.shape[0]} bands, synthetic.host_bands asks for {bands}")
                img = img[[b - 1 for b in bands]]
            elif img.shape[0] == 4 and f.suffix.lower() == ".png":
                img = img[:3]
            images.append(img.astype(np.float32))
    return images


def perturb_date(img: np.ndarray, rng: np.random.Generator, *, strength: float = 1.0) -> np.ndarray:
    """A "different date" look of the same ground: per-band gain/gamma/offset, blur or noise, sub-pixel shift.

    Args:
        img: ``(C, H, W)`` raw-unit pixels (non-negative).
        rng: Random generator.
        strength: Scales every perturbation (1.0: gains 0.8-1.2, gamma 0.8-1.25, shift up to 0.8 px).
    """
    top = float(np.percentile(img, 99.5)) or 1.0
    x = np.clip(img / top, 0.0, None)
    c = img.shape[0]
    gain = 1.0 + strength * rng.uniform(-0.2, 0.2) + strength * rng.uniform(-0.05, 0.05, size=(c, 1, 1))
    gamma = np.exp(strength * rng.uniform(-0.22, 0.22))
    offset = strength * rng.uniform(-0.06, 0.06, size=(c, 1, 1))
    x = np.power(x, gamma) * gain + offset
    if rng.random() < 0.3:
        x = ndimage.gaussian_filter(x, sigma=(0, rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)))
    if rng.random() < 0.5:
        dy, dx = strength * rng.uniform(-0.8, 0.8, size=2)
        x = ndimage.shift(x, (0, dy, dx), order=1, mode="nearest")
    if rng.random() < 0.3:
        x = x + rng.normal(0.0, 0.015 * strength, size=x.shape)
    out: np.ndarray = (np.clip(x, 0.0, None) * top).astype(np.float32)
    return out


def _match_colour(inst: ChangeInstance, target: np.ndarray) -> np.ndarray:
    """Instance date-2 pixels shifted/scaled so its date-1 ground matches the target region's statistics."""
    axes = (1, 2)
    mu_i, sd_i = inst.before.mean(axis=axes, keepdims=True), inst.before.std(axis=axes, keepdims=True) + 1e-3
    mu_t, sd_t = target.mean(axis=axes, keepdims=True), target.std(axis=axes, keepdims=True) + 1e-3
    matched = (inst.after - mu_i) / sd_i * sd_t + mu_t
    blended: np.ndarray = np.clip(0.5 * matched + 0.5 * inst.after, 0.0, None)
    return blended


def _orient(inst: ChangeInstance, rng: np.random.Generator) -> ChangeInstance:
    k = int(rng.integers(4))
    flip = rng.random() < 0.5

    def f(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k, axes=(-2, -1))
        return np.ascontiguousarray(a[..., ::-1] if flip else a)

    return ChangeInstance(f(inst.before), f(inst.after), f(inst.mask), f(inst.alpha))


class SyntheticSampler:
    """Draws synthetic ``(before, after, label, valid)`` crops from instances and host images.

    Args:
        instances: Change instances cut from the training pairs.
        hosts: ``(C, H, W)`` raw-unit host images (unlabelled imagery and the training pairs' own dates).
        max_instances: Most instances pasted into one crop.
        both_dates_share: Share of pasted instances put into both dates (existing object, label 0).
        max_value: Largest pixel value a synthetic crop may hold (default: the largest value of the hosts
            and instances, e.g. 255 for 8-bit imagery); colour matching and gains never go beyond it.
    """

    def __init__(
        self,
        instances: Sequence[ChangeInstance],
        hosts: Sequence[np.ndarray],
        *,
        max_instances: int = 4,
        both_dates_share: float = 0.25,
        max_value: float | None = None,
    ) -> None:
        if not hosts:
            raise ValueError("synthetic sampling needs at least one host image")
        self.instances = list(instances)
        self.hosts = list(hosts)
        if max_value is None:
            max_value = max(float(np.max(x)) for x in [*self.hosts, *(i.after for i in self.instances)])
        self.max_value = max_value
        self.max_instances = max_instances
        self.both_dates_share = both_dates_share
        areas = np.array([h.shape[1] * h.shape[2] for h in self.hosts], dtype=np.float64)
        self._host_p = areas / areas.sum()

    def _host_crop(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        host = self.hosts[int(rng.choice(len(self.hosts), p=self._host_p))]
        _, h, w = host.shape
        crop = np.zeros((host.shape[0], size, size), dtype=np.float32)
        valid = np.zeros((size, size), dtype=bool)
        y0, x0 = int(rng.integers(max(h - size, 0) + 1)), int(rng.integers(max(w - size, 0) + 1))
        hh, ww = min(size, h), min(size, w)
        crop[:, :hh, :ww] = host[:, y0 : y0 + hh, x0 : x0 + ww]
        valid[:hh, :ww] = True
        return crop, valid

    def nochange(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Host crop vs a perturbed copy of itself; label all 0."""
        a, valid = self._host_crop(rng, size)
        b = np.minimum(perturb_date(a, rng, strength=float(rng.uniform(0.5, 1.5))), self.max_value)
        return a, b, np.zeros((size, size), dtype=np.uint8), valid

    def pasted(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Host crop vs a perturbed copy with 1..N change instances pasted into it (see module docstring)."""
        a, valid = self._host_crop(rng, size)
        b = np.minimum(perturb_date(a, rng, strength=float(rng.uniform(0.3, 1.0))), self.max_value)
        label = np.zeros((size, size), dtype=np.uint8)
        if not self.instances:
            return a, b, label, valid
        for _ in range(int(rng.integers(1, self.max_instances + 1))):
            inst = _orient(self.instances[int(rng.integers(len(self.instances)))], rng)
            ih, iw = inst.mask.shape
            if ih >= size or iw >= size:
                continue
            y0, x0 = int(rng.integers(size - ih)), int(rng.integers(size - iw))
            region = (slice(None), slice(y0, y0 + ih), slice(x0, x0 + iw))
            alpha = inst.alpha[None]
            obj = _match_colour(inst, b[region])
            b[region] = alpha * obj + (1.0 - alpha) * b[region]
            if rng.random() < self.both_dates_share:
                a[region] = alpha * _match_colour(inst, a[region]) + (1.0 - alpha) * a[region]
                label[y0 : y0 + ih, x0 : x0 + iw][inst.mask] = 0
            else:
                label[y0 : y0 + ih, x0 : x0 + iw][inst.mask] = 1
        np.minimum(a, self.max_value, out=a)
        np.minimum(b, self.max_value, out=b)
        return a, b, label, valid
