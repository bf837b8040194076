"""How every synthetic detector turns a photon rate into raw ramps.

Each frame adds Poisson electrons and read noise; groups average `nframes`
frames and skip `groupgap`; a per-integration bias drift (for refpix to
remove) is optional. The random draws come in a fixed order (drift, then per
frame: photons, read noise), so a seed gives the same bytes whatever mode
calls it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np


def rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent stream per (seed, keys): one per mode, exposure and detector."""
    return np.random.default_rng([seed, *keys])


def name_key(name: str) -> int:
    """A stable integer for a detector name, to key its fixed patterns."""
    return zlib.crc32(name.upper().encode())


def read_ramps(spec, rates: Sequence[np.ndarray], *, flat: np.ndarray, refpix: np.ndarray,
               bias: np.ndarray, frame_time: float, noise: np.random.Generator,
               drift: bool = True) -> np.ndarray:
    """uint16 ramps [integration, group, y, x], read frame by frame and grouped.

    `rates`: the photon rate (DN/s) of each integration; `spec` gives the
    readout (ngroups, nframes, groupgap) and detector (gain, readnoise as a
    CDS noise, dark_rate). Reference pixels collect nothing.
    """
    per_group = spec.nframes + spec.groupgap
    nframes_total = spec.ngroups * per_group - spec.groupgap
    bias = bias.astype(float)
    frame_noise = spec.readnoise / math.sqrt(2.0)  # the reference holds CDS noise
    ny, nx = rates[0].shape
    out = np.empty((len(rates), spec.ngroups, ny, nx), dtype=np.uint16)
    for i, rate in enumerate(rates):
        photons = rate * flat + spec.dark_rate
        electrons_per_frame = np.where(refpix, 0.0, photons * spec.gain * frame_time)
        offset = noise.normal(0.0, 5.0) if drift else 0.0
        collected = np.zeros((ny, nx))
        frames = np.empty((nframes_total, ny, nx))
        for f in range(nframes_total):
            collected += noise.poisson(electrons_per_frame)
            frames[f] = collected / spec.gain + noise.normal(0.0, frame_noise, (ny, nx))
        for g in range(spec.ngroups):
            first = g * per_group
            group = frames[first : first + spec.nframes].mean(axis=0)
            out[i, g] = np.clip(np.rint(group + bias + offset), 0, 65535).astype(np.uint16)
    return out
