"""Dagster wiring of the SNE pipeline: definitions, resources, profiles, schedule, MLflow, demo."""
