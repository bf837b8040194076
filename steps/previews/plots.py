"""Products that are tables, as plots: a spectrum (x1d, x1dints, c1d), a light curve
(tso3's photometry), AMI closure phases and squared visibilities."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.table import Table

from calstream.steps.previews.images import evenly_spaced
from calstream.steps.regular_files import open_regular_file, read_regular_text

PLOT_INCHES = (6.4, 3.6)
# A table or text product larger than this is not drawn: its header (or its
# file) is untrusted, and a true spectrum or light curve is megabytes at most.
MAX_TABLE_BYTES = 256 << 20
PREVIEW_DPI = 100  # 640 x 360
THUMB_DPI = 20  # 128 x 72


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)  # a worker has no display
    from matplotlib.figure import Figure

    return Figure(figsize=PLOT_INCHES)


def render(fig) -> tuple[bytes, bytes]:
    """(preview, thumbnail) PNG bytes of one figure."""
    out = []
    for dpi in (PREVIEW_DPI, THUMB_DPI):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        out.append(buf.getvalue())
    return out[0], out[1]


def _rows(column) -> np.ndarray:
    """A table column as (spectra, points): x1dints keeps one row per
    integration, WFSS products one row per source."""
    return np.atleast_2d(np.asarray(column, dtype=np.float64))


# x1d and x1dints (extract_1d); c1d (combine_1d). A c1d had no preview: its
# table is COMBINE1D, and the event listed a picture that never came.
SPECTRUM_TABLES = ("EXTRACT1D", "COMBINE1D")
SOURCES_SHOWN = 8  # a WFSS product holds a spectrum per source, hundreds of them
# Integrations drawn faint behind their median (evenly spaced; the median is
# over all): a TSO x1dints holds thousands, a line each took 10 s of a
# calibration worker's CPU for 5,000, and a table of the size allowed
# (MAX_TABLE_BYTES) ran into the task's time-out.
INTEGRATIONS_SHOWN = 100


def _table_data(hdu, path: str):
    """The HDU's data, judged by the size its header declares before it is read."""
    if hdu.size > MAX_TABLE_BYTES:
        raise ValueError(f"{path}: table {hdu.name} of {hdu.size} bytes is too large to "
                         f"preview (more than {MAX_TABLE_BYTES})")
    return hdu.data


def spectrum(path: str):
    with open_regular_file(path) as f, fits.open(f, memmap=False) as hdus:
        tables = [Table(data) for h in hdus if h.name in SPECTRUM_TABLES
                  and (data := _table_data(h, path)) is not None]
    if not tables:
        raise ValueError(f"{path}: no {' or '.join(SPECTRUM_TABLES)} table")
    fig = _figure()
    ax = fig.add_subplot()
    title, labelled = path.rsplit("/", 1)[-1], len(tables) > 1
    for n, table in enumerate(tables):
        wave, flux = _rows(table["WAVELENGTH"]), _rows(table["FLUX"])
        if "SOURCE_ID" in table.colnames and wave.shape[0] > 1:
            # A row per source (WFSS, jwst 2.0's flat tables): each its own
            # line. The median of several sources' spectra is nobody's.
            ids = np.asarray(table["SOURCE_ID"]).ravel()
            for w, f, source in list(zip(wave, flux, ids, strict=False))[:SOURCES_SHOWN]:
                ax.plot(w, f, lw=0.8, label=f"source {source}")
            if len(ids) > SOURCES_SHOWN:
                title += f" (the first {SOURCES_SHOWN} of {len(ids)} sources)"
            labelled = True
            continue
        if wave.shape[0] > 1:  # several integrations: the median, the others faint
            rows = wave.shape[0]
            for i in evenly_spaced(rows, INTEGRATIONS_SHOWN):
                ax.plot(wave[i], flux[i], color="0.8", lw=0.4)
            if rows > INTEGRATIONS_SHOWN:
                title += f" (the median of {rows} integrations, {INTEGRATIONS_SHOWN} drawn)"
            wave, flux = np.nanmedian(wave, axis=0)[None], np.nanmedian(flux, axis=0)[None]
        ax.plot(wave[0], flux[0], lw=0.9, label=f"spectrum {n + 1}" if len(tables) > 1 else None)
    ax.set_xlabel("wavelength (µm)")
    ax.set_ylabel(f"flux ({tables[0]['FLUX'].unit or 'Jy'})")
    ax.set_title(title, fontsize=8)
    if labelled:
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _pick(table: Table, preferred: tuple[str, ...], contains: tuple[str, ...]) -> str:
    lower = {c.lower(): c for c in table.colnames}
    for name in preferred:
        if name in lower:
            return lower[name]
    for c in table.colnames:
        if any(word in c.lower() for word in contains):
            return c
    raise ValueError(f"no column like {preferred[0]} among {table.colnames}")


def light_curve(path: str):
    # Bounded, and a regular file only (read_regular_text): a text, not a path,
    # is what the table is read from.
    table = Table.read(read_regular_text(path, limit=MAX_TABLE_BYTES), format="ascii.ecsv")
    time = _pick(table, ("mjd", "int_mid_mjd_utc", "int_mid_bjd_tdb"), ("mjd", "time", "bjd"))
    flux = _pick(table, ("net_aperture_sum", "whitelight_flux", "flux"), ("flux", "sum"))
    t = np.asarray(table[time], dtype=np.float64)
    f = np.asarray(table[flux], dtype=np.float64)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot((t - np.nanmin(t)) * 24.0 * 60.0 if t.size else t, f, ".", ms=3)
    ax.set_xlabel(f"minutes since {time} {np.nanmin(t) if t.size else ''}")
    ax.set_ylabel(flux)
    ax.set_title(path.rsplit("/", 1)[-1], fontsize=8)
    fig.tight_layout()
    return fig


def _per_row(values) -> np.ndarray:
    """One number per baseline or triangle (a mean over wavelengths or integrations)."""
    array = np.asarray(values, dtype=np.float64)
    return array.reshape(array.shape[0], -1).mean(axis=1) if array.ndim > 1 else array


def interferometry(path: str):
    with open_regular_file(path) as f, fits.open(f, memmap=False) as hdus:
        names = [h.name for h in hdus]
        t3 = _table_data(hdus["OI_T3"], path) if "OI_T3" in names else None
        vis2 = _table_data(hdus["OI_VIS2"], path) if "OI_VIS2" in names else None
    if t3 is None and vis2 is None:
        raise ValueError(f"{path}: neither OI_T3 nor OI_VIS2")
    fig = _figure()
    panels = [(t3, "T3PHI", "T3PHIERR", "closure phase (deg)", "triangle"),
              (vis2, "VIS2DATA", "VIS2ERR", "squared visibility", "baseline")]
    panels = [p for p in panels if p[0] is not None]
    for n, (data, value, error, label, unit) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), n + 1)
        y = _per_row(data[value])
        err = _per_row(data[error]) if error in data.names else None
        ax.errorbar(np.arange(y.size), y, yerr=err, fmt=".", ms=3, lw=0.6)
        ax.set_xlabel(unit)
        ax.set_ylabel(label)
    fig.suptitle(path.rsplit("/", 1)[-1], fontsize=8)
    fig.tight_layout()
    return fig


PLOTTERS = {"spectrum": spectrum, "light_curve": light_curve, "interferometry": interferometry}
