"""Images: what their bytes are, how large they are, and what each provider bills.

Everything here reads only the first bytes of an image (no decoding, no new
dependency):

- :func:`sniff` names the format from its magic number: PNG, JPEG, GIF or WebP,
  the four formats every supported provider takes. Anything else (a text file
  named ``.png``, an SVG, a HEIC photo) is refused before any traffic;
- :func:`dimensions` reads width and height from the header (PNG ``IHDR``, the
  JPEG ``SOF`` segment, the GIF screen descriptor, WebP ``VP8``/``VP8L``/``VP8X``);
- :func:`image_tokens` is the input tokens one image is estimated at for a
  provider kind, from those dimensions with the provider's published formula,
  or a conservative constant when the size is unknown (an image URL, which is
  passed on as it is and never fetched).

The formulas (checked against the providers' pages, December 2026):

- OpenAI, "Images and vision", "Calculating costs"
  (https://platform.openai.com/docs/guides/images-vision#calculating-costs):
  at ``detail: high`` (what ``auto`` may pick, and the router sends no
  ``detail``) the image is scaled to fit 2048 x 2048, then down so its short
  side is 768 px, and costs 85 + 170 per 512-px tile; ``detail: low`` is 85.
  The worst case is 8 tiles (768 x 2048): :data:`OPENAI_MAX_TOKENS` = 1,445,
  used when the size is unknown. Models that count 32-px patches instead
  (gpt-4.1-mini/nano, o4-mini, gpt-5-mini/nano) can bill more for a large
  image: docs/conversations.md, "Images", says how to cover them.
- Anthropic, "Vision", "Calculate image costs"
  (https://docs.anthropic.com/en/docs/build-with-claude/vision#calculate-image-costs):
  ``width x height / 750`` tokens, after an image whose long edge is over
  1,568 px is scaled down to it; larger images come out at about 1,600 tokens,
  the cap used here and for an unknown size (:data:`ANTHROPIC_MAX_TOKENS`).
- Ollama publishes no formula (each vision model has its own encoder: 576
  tokens for LLaVA 1.5, up to 5 x 576 for LLaVA 1.6's tiles):
  :data:`OLLAMA_IMAGE_TOKENS` = 2,880 per image, whatever its size.
- the mock, and any kind without a formula: :data:`IMAGE_TOKENS` = 1,600.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from router.types import Image

__all__ = [
    "ANTHROPIC_MAX_TOKENS",
    "DEFAULT_MAX_IMAGE_BYTES",
    "IMAGE_TOKENS",
    "MIME_TYPES",
    "OLLAMA_IMAGE_TOKENS",
    "OPENAI_MAX_TOKENS",
    "bytes_problem",
    "dimensions",
    "image_tokens",
    "images_tokens",
    "sniff",
]

# settings.max_image_bytes when not set: 20 MB (OpenAI's limit per image; Anthropic's
# API takes 5 MB per image, a 400 the router reports as a provider error).
DEFAULT_MAX_IMAGE_BYTES = 20_000_000

# The formats every provider takes, by their magic numbers.
MIME_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")

# Tokens per image for a provider without a formula (the mock), whatever its size.
IMAGE_TOKENS = 1600
# OpenAI's high-detail worst case: 85 + 170 x 8 tiles (an image of 768 x 2048 after scaling).
OPENAI_MAX_TOKENS = 85 + 170 * 8
# Anthropic's cap: an image is scaled down until it is about this many tokens.
ANTHROPIC_MAX_TOKENS = 1600
# Ollama: no published formula; LLaVA 1.6's largest grid (5 tiles of 576 tokens).
OLLAMA_IMAGE_TOKENS = 2880


def sniff(data: bytes) -> str | None:
    """The MIME type of image bytes from their magic number, None when not one of
    PNG, JPEG, GIF or WebP."""
    head = bytes(data[:12])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _found(data: bytes) -> str:
    """What bytes that are not an image look like, for an error (never their content
    beyond a short printable prefix)."""
    if not data:
        return "no bytes (an empty file?)"
    head = bytes(data[:16])
    if head.startswith(b"<"):
        return "markup (SVG, HTML or XML), not a PNG, JPEG, GIF or WebP image"
    text = head.decode("latin-1")
    if all(c.isprintable() or c in "\t\r\n" for c in text) and head.isascii():
        return f"text starting {text[:12]!r}, not a PNG, JPEG, GIF or WebP image"
    return f"bytes starting {head[:8].hex(' ')}, not a PNG, JPEG, GIF or WebP image"


def bytes_problem(data: bytes, max_bytes: int, mime: str | None = None) -> str | None:
    """Why image ``data`` cannot be sent (over the cap, not an image, or ``mime``
    names another format than its bytes); None when it can."""
    if len(data) > max_bytes:
        return f"the image is {len(data):,} bytes, over settings.max_image_bytes ({max_bytes:,})"
    found = sniff(data)
    if found is None:
        return f"the image data is {_found(data)}"
    if mime is not None and mime.lower() != found:
        return f"mime={mime!r} but the bytes are {found}"
    return None


# -- dimensions from the header --------------------------------------------------------


def _u16be(b: bytes, i: int) -> int:
    return (b[i] << 8) | b[i + 1]


def _u16le(b: bytes, i: int) -> int:
    return b[i] | (b[i + 1] << 8)


def _u24le(b: bytes, i: int) -> int:
    return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16)


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    """Width and height from the first start-of-frame segment (SOF0..SOF15 but the
    DHT/JPG/DAC markers C4, C8, CC)."""
    i = 2
    n = len(b)
    while i + 3 < n:
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # no length
            i += 2
            continue
        length = _u16be(b, i + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            return _u16be(b, i + 7), _u16be(b, i + 5)
        if length < 2:
            return None
        i += 2 + length
    return None


def dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from an image's header, None when it cannot be read."""
    b = bytes(data[:32]) if not data.startswith(b"\xff\xd8") else bytes(data)
    mime = sniff(b)
    size: tuple[int, int] | None = None
    if mime == "image/png" and len(b) >= 24 and b[12:16] == b"IHDR":
        size = int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
    elif mime == "image/gif" and len(b) >= 10:
        size = _u16le(b, 6), _u16le(b, 8)
    elif mime == "image/webp" and len(b) >= 25:
        chunk = b[12:16]
        if chunk == b"VP8L" and b[20] == 0x2F:
            bits = int.from_bytes(b[21:25], "little")
            size = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        elif len(b) < 30:
            return None
        elif chunk == b"VP8 " and b[23:26] == b"\x9d\x01\x2a":
            size = _u16le(b, 26) & 0x3FFF, _u16le(b, 28) & 0x3FFF
        elif chunk == b"VP8X":
            size = _u24le(b, 24) + 1, _u24le(b, 27) + 1
    elif mime == "image/jpeg":
        size = _jpeg_size(b)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


# -- tokens per provider ---------------------------------------------------------------


def openai_tokens(width: int, height: int) -> int:
    """OpenAI's high-detail count: fit in 2048 x 2048, short side down to 768, then
    85 + 170 per 512-px tile."""
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return 85 + 170 * tiles


def anthropic_tokens(width: int, height: int) -> int:
    """Anthropic's count: long edge down to 1568 px, then width x height / 750, at
    most :data:`ANTHROPIC_MAX_TOKENS`."""
    w, h = float(width), float(height)
    if max(w, h) > 1568:
        scale = 1568 / max(w, h)
        w, h = w * scale, h * scale
    return min(ANTHROPIC_MAX_TOKENS, math.ceil(w * h / 750))


def image_tokens(kind: str, image: Image) -> int:
    """Input tokens ``image`` is estimated at by a provider of ``kind`` (the module
    docstring has the formulas and their sources)."""
    if kind == "ollama":
        return OLLAMA_IMAGE_TOKENS
    if kind == "azure_openai":  # OpenAI's models, OpenAI's image tokens
        kind = "openai"
    if kind not in ("openai", "openai_responses", "anthropic"):
        return IMAGE_TOKENS
    size = dimensions(image.data) if image.data is not None else None
    if kind != "anthropic":  # OpenAI's count, for Chat Completions and Responses alike
        return OPENAI_MAX_TOKENS if size is None else openai_tokens(*size)
    return ANTHROPIC_MAX_TOKENS if size is None else anthropic_tokens(*size)


def images_tokens(kind: str, images: Sequence[Image], each: int | None = None) -> int:
    """Input tokens ``images`` are estimated at on a model of a provider of ``kind``:
    ``each`` per image when the model sets its own (``models.<m>.image_tokens``),
    else the kind's formula per image."""
    if each is not None:
        return each * len(images)
    return sum(image_tokens(kind, image) for image in images)
