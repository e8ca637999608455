"""Per-network hyperparameter sampling (SPEC §2): ranges, categories, determinism, subset independence."""
import math

from sne_core import hparams as H


def test_values_stay_in_protocol_ranges_and_cover_every_category():
    hps = H.sample_hparams(zoo_seed=3, n=2000)
    assert [h.model_id for h in hps] == list(range(2000))
    for h in hps:
        assert H.LR_RANGE[0] <= h.lr <= H.LR_RANGE[1]
        assert H.L2_RANGE[0] <= h.l2 <= H.L2_RANGE[1]
        assert H.INIT_STD_RANGE[0] <= h.init_std <= H.INIT_STD_RANGE[1]
        assert H.DROPOUT_RANGE[0] <= h.dropout <= H.DROPOUT_RANGE[1]
        assert h.bias_init == 0.0 and 0 <= h.seed < 2**31
    assert {h.optimizer for h in hps} == set(H.OPTIMIZERS)
    assert {h.init for h in hps} == set(H.INITS)
    assert {h.activation for h in hps} == set(H.ACTIVATIONS)
    assert {h.train_fraction for h in hps} == set(H.TRAIN_FRACTIONS)


def test_log_uniform_spreads_over_the_decades():
    # log-uniform: about the same count in each decade of [1e-8, 1e-2] (6 decades)
    l2 = [math.log10(h.l2) for h in H.sample_hparams(0, 3000)]
    counts = [sum(lo <= v < lo + 1 for v in l2) for lo in range(-8, -2)]
    assert min(counts) > 350 and max(counts) < 650, counts


def test_same_seed_same_networks_and_different_seed_differs():
    assert H.sample_hparams(7, 50) == H.sample_hparams(7, 50)
    assert H.sample_hparams(7, 50) != H.sample_hparams(8, 50)
    assert len({h.seed for h in H.sample_hparams(7, 500)}) == 500


def test_a_network_depends_only_on_zoo_seed_and_model_id():
    full = H.sample_hparams(11, 40)
    for i in (0, 17, 39):
        assert H.sample_network(11, i) == full[i]
    assert H.sample_hparams(11, 10) == full[:10]          # a smaller zoo is a prefix of a larger one


def test_bias_init_passes_through_and_as_dict_round_trips():
    h = H.sample_network(1, 2, bias_init=0.01)
    assert h.bias_init == 0.01
    assert H.HParams(**h.as_dict()) == h
