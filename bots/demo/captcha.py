"""The demo credit bureau's captcha: a few characters drawn askew on a noisy PNG (Pillow).

Not a security measure (the demo hands the answer out at ``GET /demo/captcha``): it is there
so that the person's page shows, and the tests solve, a real picture rather than a stand-in.
"""

from __future__ import annotations

import base64
import io
import secrets

from PIL import Image, ImageDraw, ImageFilter, ImageFont

#: no 0/O, 1/I/L, 2/Z, 5/S, 8/B: a person should not have to guess between look-alikes
ALPHABET = "ACDEFHJKMNPRTUVWXY34679"
LENGTH = 5
SIZE = (220, 80)


def new_answer() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def draw(answer: str) -> bytes:
    """A PNG (grayscale, a few KiB) of ``answer`` with each character turned and shifted, crossed
    by lines and speckled."""
    rng = secrets.SystemRandom()
    width, height = SIZE
    image = Image.new("L", SIZE, 245)
    pen = ImageDraw.Draw(image)
    for _ in range(250):
        pen.point((rng.randrange(width), rng.randrange(height)), fill=rng.randrange(90, 200))
    font = ImageFont.load_default(size=44)
    step = (width - 20) // max(1, len(answer))
    for i, char in enumerate(answer):
        glyph = Image.new("L", (64, 72), 0)
        ImageDraw.Draw(glyph).text((10, 4), char, font=font, fill=255)
        glyph = glyph.rotate(rng.uniform(-28, 28), resample=Image.Resampling.BICUBIC, expand=False)
        ink = Image.new("L", glyph.size, rng.randrange(10, 70))
        image.paste(ink, (10 + i * step + rng.randrange(-4, 5), rng.randrange(-2, 10)), glyph)
    for _ in range(4):
        start = (rng.randrange(0, width // 3), rng.randrange(height))
        end = (rng.randrange(2 * width // 3, width), rng.randrange(height))
        pen.line([start, end], fill=rng.randrange(40, 120), width=2)
    image = image.filter(ImageFilter.SMOOTH)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
