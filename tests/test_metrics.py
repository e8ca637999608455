"""Metrics against values computed by hand."""
import math

import numpy as np
import pytest
import torch

from sne_core.metrics import kendall_tau, l1, r2, summarize


def test_kendall_tau_by_hand():
    # 6 pairs; only (2, 3) is swapped: (5 concordant - 1 discordant) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([0.1, 0.2, 0.3], [0.5, 0.6, 0.9]) == pytest.approx(1.0)   # ranks only, not values
    assert kendall_tau([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)


def test_kendall_tau_undefined_for_constant_prediction():
    assert math.isnan(kendall_tau([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))


def test_r2_and_l1_by_hand():
    true, pred = [1.0, 2.0, 3.0], [1.0, 2.0, 4.0]
    assert r2(pred, true) == pytest.approx(1 - 1 / 2)        # SS_res = 1, SS_tot = 2
    assert l1(pred, true) == pytest.approx(1 / 3)
    assert r2(true, true) == pytest.approx(1.0)
    assert r2([2.0, 2.0, 2.0], true) == pytest.approx(0.0)   # predicting the mean
    assert math.isnan(r2([1.0, 2.0], [0.5, 0.5]))


def test_summarize_accepts_tensors_and_checks_lengths():
    m = summarize(torch.tensor([0.1, 0.4, 0.3]), np.array([0.2, 0.5, 0.4]))
    assert set(m) == {"tau", "r2", "l1"}
    assert m["tau"] == pytest.approx(1.0) and m["l1"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="same length"):
        summarize([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="empty"):
        summarize([], [])


def test_noise_ceiling_falls_with_fewer_test_images():
    from sne_core.metrics import noise_ceiling_tau
    acc = np.random.default_rng(0).uniform(0.1, 0.95, size=2000)
    ceilings = [noise_ceiling_tau(acc, n) for n in (100_000, 2000, 360, 50)]
    assert ceilings[0] > 0.99 and all(a > b for a, b in zip(ceilings, ceilings[1:]))
    assert noise_ceiling_tau(acc, 360) == noise_ceiling_tau(acc, 360)          # seeded
    with pytest.raises(ValueError, match="n_images"):
        noise_ceiling_tau(acc, 0)


def test_split_half_ceiling_by_hand():
    from sne_core.metrics import split_half_ceiling_tau
    assert split_half_ceiling_tau(1.0) == pytest.approx(1.0)
    # tau 0.813 -> r = sin(0.813 pi / 2) = 0.9574 -> reliability 2r / (1 + r) = 0.9782 -> tau of sqrt(0.9782)
    r = math.sin(math.pi * 0.813 / 2)
    assert split_half_ceiling_tau(0.813) == pytest.approx(2 / math.pi * math.asin(math.sqrt(2 * r / (1 + r))))
    taus = [split_half_ceiling_tau(t) for t in (0.2, 0.5, 0.8, 0.95)]
    assert all(c > t for c, t in zip(taus, (0.2, 0.5, 0.8, 0.95))) and taus == sorted(taus)
    assert split_half_ceiling_tau(-0.3) == 0.0            # no agreement between halves: no ceiling above 0
