"""A NIRCam imaging time series (NRC_TSIMAGE): one long multi-integration exposure.

The program module simulates it (`program.simulate_program`); this spec only
says what differs from imaging: TSOVISIT, the point-source subarray, many
integrations, no dither, and a bright target whose transit the calints'
per-integration photometry should find. NRC_TSIMAGE needs no reference type
imaging does not (image2: distortion, filteroffset, flat, photom, area), but
its detector references are per subarray: `references.write_visit_reference_files`
writes one context for imaging and time series together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calstream.steps.synthetic.program import ProgramSpec


@dataclass(frozen=True)
class TimeSeriesSpec(ProgramSpec):
    """A NIRCam imaging time series (NRC_TSIMAGE): one long multi-integration exposure.

    A bright target at the point-source subarray's reference pixel, dimmed
    by a box-shaped transit over `transit_integrations`, so that the
    calints' per-integration photometry has something to find. TSOVISIT is
    set, there is no dither, and the PSF is broad (time series defocus
    bright targets; a Gaussian stands in for the weak-lens PSF).
    """

    # The target, its transit and the few field stars around it.
    target_name: str = "SYNTH-TRANSIT-1"
    target_flux: float = 1.0e6
    transit_depth: float = 0.01
    n_stars: int = 2
    star_flux_range: tuple[float, float] = (2000.0, 5000.0)
    star_sigma: float = 2.0
    sky_rate: float = 2.0
    # One long exposure on the point-source subarray: a TSO visit, not dithered.
    exp_type: str = "NRC_TSIMAGE"
    tsovisit: bool = True
    filter: str = "F210M"
    subarray: str = "SUB64P"
    dithers: int = 1
    ngroups: int = 6
    nints: int = 8
    observation: str = "002"
    visit_group: str = "01"
    visit_start: str = "2024-01-15T09:00:00.000"
    # First and last integration (1-based, inclusive) in transit.
    transit_integrations: tuple[int, int] = (4, 6)

    def in_transit(self) -> np.ndarray:
        """Per integration (0-based): is it in the transit?"""
        first, last = self.transit_integrations
        inside = np.zeros(self.nints, bool)
        inside[first - 1 : last] = True
        return inside

    def measured_depth(self, series) -> float:
        """The transit depth a per-integration brightness `series` shows."""
        series = np.asarray(series, dtype=float)
        inside = self.in_transit()
        return 1 - series[inside].mean() / series[~inside].mean()

    def target_flux_factor(self, integration: int) -> float:
        first, last = self.transit_integrations
        return 1.0 - self.transit_depth if first <= integration <= last else 1.0

    @property
    def dither_pattern(self) -> str:
        return "NONE"

    def validate(self) -> None:
        super().validate()
        if self.nints < 2:
            # jwst treats a single-integration exposure as not TSO.
            raise ValueError("a time series needs nints >= 2")
