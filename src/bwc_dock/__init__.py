"""bwc-dock: body-worn-camera dock ingest daemon."""

__version__ = "0.1.0"
