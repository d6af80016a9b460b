"""What ``ocr-stream`` reads: documents (image files, folders of them) or one video or camera.

Image files are read as they are; only a video file or a camera needs OpenCV (the
``video`` extra), imported when one is opened.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
JPEG_QUALITY = 90


class SourceError(Exception):
    """A SOURCE that cannot be read: not an image, a folder of images, a video file or a camera."""


def documents(sources: list[str]) -> list[Path] | None:
    """The image files named by ``sources``, folders expanded in name order; None for a video or camera.

    An image file that does not exist is kept: reading it fails, and is reported, with the others.
    """
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise SourceError(f"{source}: no {'/'.join(sorted(IMAGE_SUFFIXES))} images in this folder")
            files += found
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            files.append(path)
        elif len(sources) == 1:
            return None
        else:
            raise SourceError(f"{source}: not an image or a folder; a video file or a camera is read alone")
    return files


def open_video(source: str) -> tuple[Iterator[bytes], float | None]:
    """The JPEG-encoded frames of a video file, a camera index or a stream URL, and its frame rate."""
    try:
        import cv2
    except ImportError:
        raise SourceError(
            f"{source}: reading a video file or a camera needs OpenCV: pip install 'ocr-stream-client[video]'"
        ) from None
    camera = source.isdigit() and not Path(source).exists()
    capture = cv2.VideoCapture(int(source) if camera else source)
    if not capture.isOpened():
        what = "camera" if camera else "an image, a folder of images or a video file"
        raise SourceError(f"{source}: cannot open it as {what}")
    rate = capture.get(cv2.CAP_PROP_FPS)
    return _jpeg_frames(cv2, capture), rate if rate > 0 else None


def _jpeg_frames(cv2: Any, capture: Any) -> Iterator[bytes]:
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if ok:
                yield jpeg.tobytes()
    finally:
        capture.release()
