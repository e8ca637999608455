"""Metrics against values computed by hand."""
import math

import numpy as np
import pytest
import torch

from sne_core.metrics import kendall_tau, l1, r2, summarize, tau_by_region


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


def test_tau_by_region_by_hand():
    # true: two collapsed (0.05, 0.1) and two learned (0.5, 0.9) networks; the prediction swaps the
    # collapsed pair only. 6 pairs: 1 below (discordant), 1 above, 4 across (all concordant).
    parts = tau_by_region([0.2, 0.1, 0.6, 0.8], [0.05, 0.1, 0.5, 0.9], floor=0.2)
    assert parts["below"] == -1 and parts["above"] == 1 and parts["across"] == 1
    assert (parts["share_below"], parts["share_above"], parts["share_across"]) == (1 / 6, 1 / 6, 4 / 6)
    assert parts["all"] == pytest.approx(4 / 6) == pytest.approx(kendall_tau([0.2, 0.1, 0.6, 0.8], [0.05, 0.1, 0.5, 0.9]))
    assert math.isnan(tau_by_region([0.3, 0.4], [0.5, 0.6])["below"])      # no collapsed pair


def test_tau_by_region_weights_back_into_tau_over_blocks():
    # 2,500 networks: more than one block of rows, so the blocked pair loop is checked too
    rng = np.random.default_rng(0)
    true = np.concatenate([rng.uniform(0.05, 0.15, 900), rng.uniform(0.2, 0.95, 1600)])
    pred = true + rng.normal(0, 0.1, true.size)
    parts = tau_by_region(pred, true)
    assert sum(parts[f"share_{k}"] * parts[k] for k in ("below", "above", "across")) == pytest.approx(parts["all"])
    assert parts["all"] == pytest.approx(kendall_tau(pred, true))          # no ties: tau-a is tau-b
    low = true < 0.2
    assert parts["above"] == pytest.approx(kendall_tau(pred[~low], true[~low]))
    assert parts["below"] == pytest.approx(kendall_tau(pred[low], true[low]))
    assert parts["share_below"] == pytest.approx(900 * 899 / 2 / (2500 * 2499 / 2))
