"""A do-nothing model stand-in (serving benchmarks only, never in end-to-end tests)."""

from __future__ import annotations

from typing import Any

from serve_app.config import OCRConfig
from serve_app.jobs import ReaderInfo, ReadReply


class StandInModel:
    """Answers every read at once with no lines: measures the serving path alone."""

    def __init__(self, config: OCRConfig, *, max_pixels: int) -> None:
        self._config = config

    async def read(self, image: bytes, demand: tuple[str, int] | None = None) -> ReadReply:
        return ReadReply(lines=[])

    def info(self) -> ReaderInfo:
        return ReaderInfo(engine="stand-in", device="cpu", models=[])

    def ready(self) -> bool:
        return True

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        pass
