"""Images as embedding inputs: the bytes of one file, named by the SHA-256 of those bytes.

An :class:`Image` holds encoded bytes (PNG, JPEG, ...) and never pixels, so a folder of scans costs
its file sizes until a batch decodes it. Decoding (:meth:`Image.decode`) goes through Pillow:
EXIF orientation applied, converted to RGB, and downscaled when it is over the size limit
(:class:`ImageLimits`); the model's own preprocessing does the final resize, so the limit only
bounds the memory a batch of large scans can take. Downscaled images are counted in
:class:`ImageStats`, never dropped.

Two images are the same input exactly when their bytes are equal: the cache keys image rows on
``Image.sha256``, so a re-encoded copy of the same pixels is a row of its own.

Anything unusable (not an image, truncated, zero bytes, too large to decode safely) raises
:class:`~embedtune.errors.InputError` with one line naming the image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, require

__all__ = ["IMAGE_SUFFIXES", "Image", "ImageLimits", "ImageStats"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
"""File suffixes (lower case) read as images from a folder."""


@dataclass(frozen=True, kw_only=True)
class ImageLimits:
    """How large an image may be.

    - ``max_pixels`` / ``max_side``: an image over either is downscaled (aspect kept) before the
      model sees it; counted in :class:`ImageStats`.
    - ``refuse_pixels``: an image whose header claims more pixels is refused without being decoded
      (a decompression bomb, or a scan no machine should decode whole).
    """

    max_pixels: int = 4096 * 4096
    max_side: int = 4096
    refuse_pixels: int = 250_000_000

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_side", "refuse_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")

    def describe(self) -> str:
        """The limits as a fingerprint names them (they change the vectors of large images)."""
        return f"max_pixels={self.max_pixels},max_side={self.max_side}"

    def decoded_pixels(self, size: tuple[int, int]) -> int:
        """Pixels an image of ``size`` has once decoded under these limits."""
        width, height = _fit(size, self)
        return width * height


@dataclass
class ImageStats:
    """What decoding did: images decoded, and the names of those downscaled (with their sizes)."""

    decoded: int = 0
    downscaled: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, image: Image, downscaled_from: tuple[int, int] | None, to: tuple[int, int]) -> None:
        with self._lock:
            self.decoded += 1
            if downscaled_from is not None:
                w, h = downscaled_from
                self.downscaled.append(f"{image.name}: {w}x{h} downscaled to {to[0]}x{to[1]}")


@dataclass(frozen=True, eq=False)
class Image:
    """One image input: encoded ``data`` and a ``name`` for messages (a path, an id).

    ``sha256`` (hex) names the bytes; equality is equality of the bytes.
    """

    data: bytes
    name: str = "image"
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.data, (bytes, bytearray)):
            raise TypeError(f"Image data must be bytes, not {type(self.data).__name__}")
        object.__setattr__(self, "data", bytes(self.data))
        object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.sha256 == self.sha256

    def __hash__(self) -> int:
        return hash(self.sha256)

    def __repr__(self) -> str:
        return f"Image(name={self.name!r}, bytes={len(self.data)}, sha256={self.sha256[:12]})"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, name: str | None = None) -> Image:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from None
        return cls(data, name=name or str(path))

    @classmethod
    def from_data_url(cls, url: str, *, name: str = "image") -> Image:
        """An image from ``data:image/...;base64,...`` (what OpenAI-style servers take in ``input``)."""
        head, comma, body = url.partition(",")
        if not (url.startswith("data:image/") and comma and head.endswith(";base64")):
            raise InputError(f"{name} is not a data URL of a base64 image (data:image/png;base64,...)")
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{name}: the data URL's base64 is malformed") from None
        return cls(data, name=name)

    def data_url(self, data: bytes | None = None) -> str:
        """``data:<mime>;base64,...`` of these bytes (or of ``data``, a re-encoding of them)."""
        data = self.data if data is None else data
        return f"data:{_sniff_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` from the header alone; raises ``InputError`` when it is not an image."""
        with self._open() as opened:
            return int(opened.size[0]), int(opened.size[1])

    def decode(self, limits: ImageLimits | None = None, stats: ImageStats | None = None) -> Any:
        """The pixels as a Pillow RGB image, upright (EXIF orientation applied), within ``limits``."""
        pil = require("PIL.Image", "image")
        ops = require("PIL.ImageOps", "image")
        limits = limits or ImageLimits()
        with self._open() as opened:
            width, height = opened.size
            if width * height > limits.refuse_pixels:
                raise InputError(
                    f"{self.name}: {width}x{height} pixels is over the {limits.refuse_pixels:,} an image may have; "
                    "downscale it before embedding"
                )
            target = _fit((width, height), limits)
            try:
                if target != (width, height) and opened.format == "JPEG":
                    opened.draft("RGB", target)  # let the JPEG decoder skip pixels it would throw away
                upright = ops.exif_transpose(opened)
                rgb = upright.convert("RGB")
            except (OSError, ValueError, SyntaxError, pil.DecompressionBombError) as exc:
                raise InputError(
                    f"{self.name}: cannot decode the image ({_one_line(exc)}); repair or remove it"
                ) from None
        target = _fit(rgb.size, limits)
        if target != rgb.size:
            rgb = rgb.resize(target, pil.Resampling.LANCZOS, reducing_gap=3.0)
        # JPEG's draft mode may already have done part of it: compare with the header's size
        downscaled = (width, height) if rgb.size[0] * rgb.size[1] < width * height else None
        if stats is not None:
            stats.record(self, downscaled, rgb.size)
        return rgb

    def encoded_within(self, limits: ImageLimits, stats: ImageStats | None = None) -> bytes:
        """The bytes to send over HTTP: these, or a PNG of the downscaled pixels when over ``limits``."""
        if self.size == _fit(self.size, limits):
            rgb = self.decode(limits, stats)  # decoded anyway, so a broken image fails here, named
            del rgb
            return self.data
        buffer = io.BytesIO()
        self.decode(limits, stats).save(buffer, format="PNG")
        return buffer.getvalue()

    def check(self, limits: ImageLimits | None = None) -> tuple[int, int]:
        """Decode once to prove the image is whole; returns its size. Raises ``InputError`` naming it."""
        size = self.size
        self.decode(limits)
        return size

    def _open(self) -> Any:
        pil = require("PIL.Image", "image")
        if not self.data:
            raise InputError(f"{self.name}: zero bytes, not an image; remove it")
        try:
            with warnings.catch_warnings():
                # Our own limit (refuse_pixels) decides what is too large, with one clear line.
                warnings.simplefilter("ignore", pil.DecompressionBombWarning)
                return pil.open(io.BytesIO(self.data))
        except pil.UnidentifiedImageError:
            raise InputError(f"{self.name}: not an image Pillow can read; remove it or convert it") from None
        except (OSError, ValueError, SyntaxError, pil.DecompressionBombError) as exc:
            raise InputError(f"{self.name}: not a readable image ({_one_line(exc)}); repair or remove it") from None


def _fit(size: tuple[int, int], limits: ImageLimits) -> tuple[int, int]:
    """The largest size with the aspect of ``size`` within both limits (``size`` itself if it fits)."""
    width, height = size
    scale = min(1.0, limits.max_side / max(width, height, 1), (limits.max_pixels / max(width * height, 1)) ** 0.5)
    if scale >= 1.0:
        return width, height
    return max(1, int(width * scale)), max(1, int(height * scale))


def _sniff_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    return "application/octet-stream"


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
