"""Client of the streaming OCR service: wire protocol v1, an asyncio client, the ``ocr-stream`` CLI."""

__version__ = "0.1.0"
