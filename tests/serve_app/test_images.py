"""Images as users send them (no Ray, no model)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve_app.images import ImageInfo, _jpeg_size, decode_bgr, decode_gray, probe
from serve_app.protocol import ErrorCode, ProtocolError, Roi
from tests.fakes import jpeg_bomb, png_bomb

LIMIT = 40_000_000


def encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def code_of(fn: object, *args: object) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.code


def text_on_transparent(color: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGBA", (40, 20), (*color, 0))  # transparent pixels carry the text colour too
    for x in range(10, 30):
        for y in range(8, 12):
            image.putpixel((x, y), (*color, 255))
    return image


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_formats_decode_to_bgr(fmt: str) -> None:
    rgb = Image.new("RGB", (64, 32), (200, 30, 10))
    bgr = decode_bgr(encode(rgb, fmt), LIMIT)
    assert bgr.shape == (32, 64, 3) and bgr.dtype == np.uint8
    b, _g, r = bgr[16, 32].tolist()
    assert r > 150 and b < 60, "channels in BGR order"


@pytest.mark.parametrize("color", [(255, 255, 255), (0, 0, 0)])
def test_text_on_a_transparent_canvas_stays_visible(color: tuple[int, int, int]) -> None:
    bgr = decode_bgr(encode(text_on_transparent(color), "PNG"), LIMIT).astype(int)
    text, background = bgr[10, 20], bgr[2, 2]
    assert abs(int(text.mean()) - int(background.mean())) > 200


def test_shared_transparent_png_has_visible_text(images: Path) -> None:
    bgr = decode_bgr((images / "white_font_color_transparent.png").read_bytes(), LIMIT)
    assert bgr.std() > 30


def test_exif_orientation_applied(images: Path) -> None:
    raw = Image.open(images / "img_exif_orientation.jpg")
    assert raw.getexif().get(0x0112) == 3  # stored upside down
    stored = np.asarray(raw.convert("RGB"))[..., ::-1]
    bgr = decode_bgr((images / "img_exif_orientation.jpg").read_bytes(), LIMIT)
    assert np.array_equal(bgr, np.rot90(stored, 2))


def test_grey_palette_and_16_bit() -> None:
    grey = Image.new("L", (20, 10), 77)
    assert decode_bgr(encode(grey, "PNG"), LIMIT)[5, 5].tolist() == [77, 77, 77]
    palette = Image.new("RGB", (20, 10), (0, 0, 255)).convert("P")
    assert decode_bgr(encode(palette, "PNG"), LIMIT)[5, 5].tolist() == [255, 0, 0]
    deep = Image.fromarray(np.full((10, 20), 40000, np.uint16))
    assert abs(int(decode_bgr(encode(deep, "PNG"), LIMIT)[5, 5, 0]) - 40000 * 255 // 65535) <= 1


def test_truncated_jpeg_is_bad_image(images: Path) -> None:
    data = (images / "ch_en_num.jpg").read_bytes()
    assert code_of(decode_bgr, data[: len(data) // 2], LIMIT) is ErrorCode.BAD_IMAGE
    assert code_of(decode_gray, data[: len(data) // 2], LIMIT, 160) is ErrorCode.BAD_IMAGE


def test_garbage_and_unsupported_formats_are_bad_image() -> None:
    assert code_of(probe, b"hello", LIMIT) is ErrorCode.BAD_IMAGE
    gif = encode(Image.new("RGB", (4, 4)), "GIF")
    assert code_of(probe, gif, LIMIT) is ErrorCode.BAD_IMAGE


@pytest.mark.parametrize("header", [png_bomb(), jpeg_bomb()])
def test_pixel_bombs_are_too_large_without_decoding(header: bytes) -> None:
    import tracemalloc

    tracemalloc.start()
    assert code_of(decode_bgr, header, LIMIT) is ErrorCode.TOO_LARGE
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 10 * 1024 * 1024


def test_zero_sized_is_bad_image() -> None:
    assert code_of(probe, png_bomb(0, 10), LIMIT) is ErrorCode.BAD_IMAGE


def _jpegs(images: Path) -> list[bytes]:
    """JPEGs as cameras and libraries write them: baseline, progressive, grey, CMYK, EXIF, restarts."""
    photo = Image.open(images / "ch_en_num.jpg").convert("RGB")
    return [
        *(path.read_bytes() for path in sorted(images.glob("*.jpg"))),
        encode(photo, "JPEG", progressive=True),
        encode(photo.convert("L"), "JPEG", quality=40),
        encode(photo.convert("CMYK"), "JPEG"),
        encode(photo, "JPEG", restart_marker_blocks=4, exif=Image.Exif(), subsampling=0),
        encode(photo.resize((641, 1)), "JPEG"),
    ]


def test_jpeg_probe_reads_the_size_pillow_reads(images: Path) -> None:
    for data in _jpegs(images):
        with Image.open(io.BytesIO(data)) as im:
            assert _jpeg_size(data) == im.size  # read without Pillow
            assert probe(data, LIMIT) == ImageInfo("JPEG", *im.size)
    assert code_of(probe, jpeg_bomb(), LIMIT) is ErrorCode.TOO_LARGE
    assert code_of(probe, jpeg_bomb(0, 10), LIMIT) is ErrorCode.BAD_IMAGE


@pytest.mark.filterwarnings("ignore")  # Pillow warns of the EXIF blocks damaged here
def test_a_damaged_jpeg_header_is_bad_image_or_its_true_size(images: Path) -> None:
    """Cut or with a byte changed anywhere in its header, a JPEG is a clear ``bad_image``,
    or (damage Pillow would not notice either) probed at the size Pillow reads."""
    rng = np.random.default_rng(5)
    for data in _jpegs(images):
        header = data[: data.index(b"\xff\xda")]  # up to the scan
        damaged = [data[:cut] for cut in range(0, len(header) + 2)]
        for at in rng.integers(0, len(header), 200):
            damaged.append(data[:at] + bytes([int(rng.integers(256))]) + data[at + 1 :])
        for frame in damaged:
            try:
                with Image.open(io.BytesIO(frame)) as im:
                    pillow = im.size
            except Exception:
                pillow = None
            try:
                info = probe(frame, LIMIT)
            except ProtocolError as exc:
                assert exc.code in (ErrorCode.BAD_IMAGE, ErrorCode.TOO_LARGE)
                continue
            assert pillow is None or (info.width, info.height) == pillow


def test_gray_thumbnail_for_dedup(images: Path) -> None:
    gray = decode_gray((images / "ch_en_num.jpg").read_bytes(), LIMIT, 160)
    assert gray.pixels.shape[1] == 160 and gray.pixels.ndim == 2 and gray.pixels.dtype == np.uint8


def gradient(width: int = 640, height: int = 480) -> np.ndarray:
    """A picture whose every pixel says where it is: red grows along x, green along y."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)


def test_reduced_jpeg_decode_matches_a_full_decode_shrunk() -> None:
    rgb = gradient()
    data = encode(Image.fromarray(rgb), "JPEG", quality=95)
    gray = decode_gray(data, LIMIT, 320)
    assert gray.pixels.shape == (240, 320)
    assert gray.source_size == (640, 480) and gray.scale == (0.5, 0.5) and gray.offset == (0.0, 0.0)
    full = np.asarray(Image.fromarray(rgb).convert("L").resize((320, 240), Image.Resampling.BOX))
    assert np.abs(gray.pixels.astype(int) - full).mean() < 2.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_gray_is_upright_like_the_image_the_model_reads(orientation: int) -> None:
    """Boxes of a read are in the upright image's pixels: the grey image must be upright too."""
    rgb = gradient(320, 240)
    exif = Image.Exif()
    exif[0x0112] = orientation
    for fmt in ("JPEG", "PNG"):
        data = encode(Image.fromarray(rgb), fmt, exif=exif.tobytes())
        upright = decode_bgr(data, LIMIT)[..., ::-1]  # what the model reads
        gray = decode_gray(data, LIMIT, 1000)
        assert gray.source_size == (upright.shape[1], upright.shape[0])
        expected = np.asarray(Image.fromarray(np.ascontiguousarray(upright)).convert("L"))
        assert gray.pixels.shape == expected.shape
        assert np.abs(gray.pixels.astype(int) - expected).mean() < 3.0, (fmt, orientation)


def test_gray_of_a_region_of_interest() -> None:
    rgb = gradient()
    data = encode(Image.fromarray(rgb), "JPEG", quality=95)
    gray = decode_gray(data, LIMIT, 320, Roi(0.5, 0.25, 1.0, 0.75))
    assert gray.region == (320, 120, 640, 360)
    assert gray.pixels.shape == (240, 320), "a half-width roi decodes at full scale: 320 px across"
    x, y = 400, 200  # a frame pixel inside the roi, where the grey image maps it
    gx, gy = x * gray.scale[0] - gray.offset[0], y * gray.scale[1] - gray.offset[1]
    expected = np.asarray(Image.fromarray(rgb).convert("L"))[y, x]
    assert abs(int(gray.pixels[round(gy), round(gx)]) - int(expected)) <= 3


def test_truncated_jpeg_is_never_decoded_half_grey() -> None:
    data = encode(Image.fromarray(gradient()), "JPEG", quality=90)
    assert code_of(decode_gray, data[: len(data) * 3 // 4], LIMIT, 320) is ErrorCode.BAD_IMAGE
