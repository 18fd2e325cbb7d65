"""emocall: a video phone appliance that speaks the other person's facial expression."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("emocall")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
