"""Previews of calibrated products, as an archive shows them: a PNG and a
thumbnail per product file (images scaled with zscale and an asinh stretch,
spectra, light curves and AMI closure phases as plots).

``naming`` is pure and imported by the daemon; ``make`` runs in a worker.
"""
