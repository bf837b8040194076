"""calstream: streaming calibration of JWST exposures.

The three rooms are installed as subpackages: ``calstream.topics`` (the
message contract), ``calstream.steps`` (calibration, no Kafka) and
``calstream.daemon`` (the runtime that wires them).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("calstream")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
