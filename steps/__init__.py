"""Calibration: routing, jwst adapters, CRDS, synthetic data. Never imports Kafka."""
