"""Real-time streaming OCR on Ray Serve."""

__version__ = "0.1.0"
