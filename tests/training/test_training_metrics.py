"""Pooled confusion-matrix metrics and object recall on masks whose scores are computed by hand here."""

from __future__ import annotations

import numpy as np
import pytest

from cspon_rs.training.metrics import ConfusionMatrix, object_hits


def test_pooled_metrics_match_hand_counts() -> None:
    truth1 = np.zeros((10, 10), bool)
    truth1[0:4, 0:5] = True  # 20 changed pixels
    pred1 = np.zeros((10, 10), bool)
    pred1[0:4, 0:3] = True  # 12 true positives
    pred1[9, 0:6] = True  # 6 false positives
    truth2 = np.zeros((10, 10), bool)
    truth2[5:7, 5:7] = True  # 4 changed pixels, all missed
    pred2 = np.zeros((10, 10), bool)
    cm = ConfusionMatrix()
    cm.update(pred1, truth1)
    cm.update(pred2, truth2)
    m = cm.compute()
    tp, fp, fn = 12, 6, (20 - 12) + 4
    tn = 200 - tp - fp - fn
    assert (m.tp, m.fp, m.fn, m.tn) == (tp, fp, fn, tn)
    assert m.precision == pytest.approx(tp / (tp + fp))
    assert m.recall == pytest.approx(tp / (tp + fn))
    assert m.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m.iou == pytest.approx(tp / (tp + fp + fn))
    n = 200
    po = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n**2
    assert m.kappa == pytest.approx((po - pe) / (1 - pe))
    # pooled, not the mean of per-image F1 (image 2 alone has F1 = 0)
    per_image_mean = (2 * 12 / (2 * 12 + 6 + 8) + 0.0) / 2
    assert m.f1 != pytest.approx(per_image_mean)
    assert (m.objects, m.objects_hit) == (2, 1)


def test_valid_mask_excludes_pixels() -> None:
    truth = np.zeros((4, 4), bool)
    truth[0, 0] = True
    pred = np.ones((4, 4), bool)
    valid = np.zeros((4, 4), bool)
    valid[0, :2] = True
    cm = ConfusionMatrix()
    cm.update(pred, truth, valid)
    m = cm.compute()
    assert (m.tp, m.fp, m.fn, m.tn) == (1, 1, 0, 0)


def test_object_recall_min_overlap() -> None:
    truth = np.zeros((20, 20), bool)
    truth[0:5, 0:5] = True  # 25 px
    truth[10:12, 10:12] = True  # 4 px
    truth[15, 15] = truth[16, 16] = True  # diagonal neighbours: one object with 8-connectivity
    pred = np.zeros_like(truth)
    pred[0, 0:3] = True  # 3/25 of object 1
    pred[10:12, 10] = True  # 2/4 of object 2
    assert object_hits(pred, truth) == (3, 2)
    assert object_hits(pred, truth, min_overlap=0.5) == (3, 1)


def test_empty_everything_is_zero_not_nan() -> None:
    cm = ConfusionMatrix()
    cm.update(np.zeros((5, 5), bool), np.zeros((5, 5), bool))
    m = cm.compute()
    assert (m.precision, m.recall, m.f1, m.iou, m.kappa) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert m.overall_accuracy == 1.0
