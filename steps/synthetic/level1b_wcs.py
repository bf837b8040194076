"""The WCS keywords a level-1b file carries, from an attitude and an aperture."""

from __future__ import annotations

import math

import numpy as np

from calstream.steps.synthetic import metadata
from calstream.steps.synthetic.attitude import position_angle, tel_to_sky, v3_position_angle


def linear_wcs_keywords(att: np.ndarray, to_v2v3, *, crpix: tuple[float, float],
                        size: tuple[int, int], pixel_scale: float, vparity: int,
                        v3yangle: float) -> dict:
    """The level-1b WCS keywords of an aperture with a linear distortion:
    `to_v2v3` maps the file's 1-based pixels to V2/V3 (arcsec), `size` is
    (nx, ny), `pixel_scale` in arcsec."""
    xref, yref = crpix
    v2_ref, v3_ref = (float(v) for v in to_v2v3(xref, yref))
    ra_ref, dec_ref = (float(v) for v in tel_to_sky(att, v2_ref, v3_ref))
    up = tel_to_sky(att, *to_v2v3(xref, yref + 1.0))
    pa_aper = position_angle(ra_ref, dec_ref, float(up[0]), float(up[1]))
    nx, ny = size
    cra, cdec = tel_to_sky(att, *to_v2v3(np.array([0.5, nx + 0.5, nx + 0.5, 0.5]),
                                         np.array([0.5, 0.5, ny + 0.5, ny + 0.5])))
    angle = math.radians(pa_aper)
    return metadata.wcs_keywords(
        crpix=(xref, yref),
        crval=(ra_ref, dec_ref),
        cdelt=pixel_scale / 3600.0,
        pc=((-math.cos(angle), math.sin(angle)), (math.sin(angle), math.cos(angle))),
        v2v3_ref=(v2_ref, v3_ref),
        vparity=vparity,
        v3yangle=v3yangle,
        roll_ref=v3_position_angle(att, v2_ref, v3_ref),
        s_region=metadata.footprint(cra, cdec),
        pa_aper=pa_aper,
    )


def set_fixed_pointing(m, att: np.ndarray, frame, sub, *, aperture: str,
                       pps_aperture: str) -> None:
    """One undithered pointing of `frame` (a `focal_plane.LinearAperture`,
    mapped linearly as the DISTORTION reference maps it) read in `sub` (a
    `focal_plane.Subarray`): the dither, WCS and pointing keywords."""
    from calstream.steps.synthetic.attitude import v1_pointing

    metadata.set_dither(m, pattern="NONE", points=1, total=1, position=1, offset=(0.0, 0.0))
    wcs = linear_wcs_keywords(att, frame.pixel_to_v2v3, crpix=(frame.xref, frame.yref),
                              size=(sub.xsize, sub.ysize), pixel_scale=frame.pixel_scale,
                              vparity=frame.vparity, v3yangle=frame.v3_idl_yangle)
    metadata.set_pointing(m, aperture=aperture, pps_aperture=pps_aperture, wcs=wcs,
                          v1=v1_pointing(att))


def tangent_wcs_keywords(att: np.ndarray, to_v2v3, *, xstart: int, ystart: int,
                         size: tuple[int, int], crpix: tuple[float, float],
                         pixel_scale: float, vparity: int, v3yangle: float) -> dict:
    """The level-1b WCS keywords of a subarray at (`xstart`, `ystart`) of a full
    frame whose 1-based pixels `to_v2v3` maps to V2/V3: a linear FITS WCS at
    the reference pixel `crpix` (subarray frame), taken from the exact mapping."""
    xref, yref = crpix
    xref_full = xstart - 1 + xref
    yref_full = ystart - 1 + yref
    v2_ref, v3_ref = (float(v) for v in to_v2v3(xref_full, yref_full))
    ra_ref, dec_ref = (float(v) for v in tel_to_sky(att, v2_ref, v3_ref))
    roll_ref = v3_position_angle(att, v2_ref, v3_ref)

    def sky_of(dx, dy):
        return tel_to_sky(att, *to_v2v3(xref_full + dx, yref_full + dy))

    def tangent(ra, dec):
        r, d, r0, d0 = map(np.radians, (ra, dec, ra_ref, dec_ref))
        cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r - r0)
        xi = np.cos(d) * np.sin(r - r0) / cosc
        eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(r - r0)) / cosc
        return np.degrees(xi), np.degrees(eta)

    pa_aper = position_angle(ra_ref, dec_ref, *(float(v) for v in sky_of(0.0, 1.0)))
    xi_x, eta_x = tangent(*sky_of(1.0, 0.0))
    xi_y, eta_y = tangent(*sky_of(0.0, 1.0))
    cdelt = pixel_scale / 3600.0
    pc = np.array([[xi_x, xi_y], [eta_x, eta_y]], dtype=float) / cdelt

    nx, ny = size
    corners_x = np.array([0.5, nx + 0.5, nx + 0.5, 0.5]) + xstart - 1
    corners_y = np.array([0.5, 0.5, ny + 0.5, ny + 0.5]) + ystart - 1
    cra, cdec = tel_to_sky(att, *to_v2v3(corners_x, corners_y))
    return metadata.wcs_keywords(
        crpix=(xref, yref),
        crval=(ra_ref, dec_ref),
        cdelt=cdelt,
        pc=((float(pc[0, 0]), float(pc[0, 1])), (float(pc[1, 0]), float(pc[1, 1]))),
        v2v3_ref=(v2_ref, v3_ref),
        vparity=vparity,
        v3yangle=v3yangle,
        roll_ref=roll_ref,
        s_region=metadata.footprint(cra, cdec),
        pa_aper=pa_aper,
    )
