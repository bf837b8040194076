"""The observatory's attitude: telescope (V2, V3) to sky (RA, Dec) and back.

An attitude is the rotation matrix taking telescope unit vectors to ICRS
ones; every mode points by solving for the one that puts its target at an
aperture's V2/V3 with V3 at V1 at the visit's PA_V3.
"""

from __future__ import annotations

import math

import numpy as np


def attitude_matrix(v2: float, v3: float, roll: float, ra: float, dec: float) -> np.ndarray:
    """Rotation taking telescope (V2, V3 in arcsec) unit vectors to ICRS unit vectors.

    The JWST convention: (v2, v3) lands on (ra, dec) with V3 at position angle
    `roll` there. Built with astropy's rotation sequence, as assign_wcs does.
    """
    from astropy.modeling.rotations import RotationSequence3D

    rot = RotationSequence3D([v2 / 3600.0, -v3 / 3600.0, roll, dec, -ra], axes_order="zyxyz")
    basis = np.eye(3)
    x, y, z = rot(basis[0], basis[1], basis[2])
    return np.array([x, y, z])


def _unit(lon_deg, lat_deg):
    lon = np.radians(lon_deg)
    lat = np.radians(lat_deg)
    return np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def _lonlat(vec):
    lon = np.degrees(np.arctan2(vec[1], vec[0])) % 360.0
    lat = np.degrees(np.arcsin(np.clip(vec[2], -1.0, 1.0)))
    return lon, lat


def tel_to_sky(att: np.ndarray, v2, v3):
    return _lonlat(att @ _unit(np.asarray(v2) / 3600.0, np.asarray(v3) / 3600.0))


def sky_to_tel(att: np.ndarray, ra, dec):
    lon, lat = _lonlat(att.T @ _unit(ra, dec))
    lon = np.where(lon > 180.0, lon - 360.0, lon)
    return lon * 3600.0, lat * 3600.0


def position_angle(ra1, dec1, ra2, dec2) -> float:
    """East of north, degrees, of point 2 seen from point 1."""
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    y = math.sin(r2 - r1) * math.cos(d2)
    x = math.cos(d1) * math.sin(d2) - math.sin(d1) * math.cos(d2) * math.cos(r2 - r1)
    return math.degrees(math.atan2(y, x)) % 360.0


def v3_position_angle(att: np.ndarray, v2: float, v3: float) -> float:
    """Position angle of the +V3 direction at (v2, v3)."""
    ra0, dec0 = tel_to_sky(att, v2, v3)
    ra1, dec1 = tel_to_sky(att, v2, v3 + 1.0)
    return position_angle(float(ra0), float(dec0), float(ra1), float(dec1))


def v1_pointing(att: np.ndarray) -> tuple[float, float, float]:
    """RA, Dec (deg) of V1 and the position angle of V3 there: the PA_V3 the header quotes."""
    ra_v1, dec_v1 = (float(v) for v in tel_to_sky(att, 0.0, 0.0))
    return ra_v1, dec_v1, v3_position_angle(att, 0.0, 0.0)


def solve_attitude(spec, v2: float, v3: float) -> np.ndarray:
    """Attitude putting the target at telescope (v2, v3) with V3 at V1 at `spec.pa_v3`."""
    roll = spec.pa_v3
    for _ in range(4):
        att = attitude_matrix(v2, v3, roll, spec.target_ra, spec.target_dec)
        err = (v3_position_angle(att, 0.0, 0.0) - spec.pa_v3 + 180.0) % 360.0 - 180.0
        roll -= err
    return attitude_matrix(v2, v3, roll, spec.target_ra, spec.target_dec)
