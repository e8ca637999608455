"""The benchmarks run. bench.encoder was broken for sessions without anyone noticing: its warm-up
used one network, which SNE's BatchNorm on the network codes refuses in training mode."""
import pytest

from bench.encoder import measure


@pytest.mark.parametrize("method", ["sne", "nfn"])
def test_encoder_benchmark_measures_a_training_step(method):
    row = measure(method, "5k", batch=2, steps=1, budget=256, device="cpu")
    assert row["arch"] == "arch1" and row["n_params"] == 4970 and row["batch"] == 2
    assert row["nets_per_s"] > 0 and row["peak_mb"] >= 0
