"""SNE core library: data, architectures, zoo training, weight store, encoders, baselines, training.

Kept free of Dagster and MLflow imports so it runs on the bare GPU image (torch + torchvision only);
pyarrow/duckdb are imported lazily inside `sne_core.store` for the same reason.
"""
