"""The installed package's version (read by the package and by pickles)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mimosa-sklearn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.2.0"
