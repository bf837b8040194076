"""The transit a synthetic time series injected, measured back from a light curve."""

import numpy as np


def transit_depth(flux, spec) -> float:
    """1 - mean in-transit flux / mean out-of-transit flux, with the
    integrations ``spec`` (a TimeSeriesSpec) puts in transit."""
    flux = np.asarray(flux, dtype=float)
    first, last = spec.transit_integrations
    in_transit = np.zeros(spec.nints, bool)
    in_transit[first - 1 : last] = True
    return 1 - flux[in_transit].mean() / flux[~in_transit].mean()
