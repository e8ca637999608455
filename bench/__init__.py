"""Benchmarks: each prints its measurement side by side with the named baseline, ratios last."""
