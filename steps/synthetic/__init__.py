"""Synthetic JWST exposures, reference files and an offline CRDS cache."""
