"""Shipped models (package data): ``manifest.json`` and one folder per model; see :mod:`pipelines.inference.shipped`."""
