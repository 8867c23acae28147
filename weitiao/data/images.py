"""Images for image tasks: an ImageFolder's files and classes, and decoding that never crashes.

Decoding (Pillow) respects EXIF rotation, converts grayscale, palette, CMYK and transparent
images to RGB (transparency over white), and resizes the shorter side then center-crops, as
image models' processors do. A file that cannot be decoded (truncated, not an image, a
decompression bomb: more than MAX_PIXELS by its header, refused before a pixel is decoded)
comes back as None with the reason; callers skip and count it. Decoding
runs on threads: Pillow releases the GIL while it decodes, so two cores stay busy.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from weitiao.errors import UserError

# 40 megapixels (an 8000 x 5000 photo): a 33 KB PNG can claim 144 Mpx and cost ~820 MB and seconds to decode.
MAX_PIXELS = 40_000_000
EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def image_folder(path: str, field: str) -> tuple[list[str], list[str], int]:
    """An ImageFolder: one sub-folder per class, the images inside it (any depth).

    Returns:
        (image paths, their class names, files ignored for their extension), sorted by class and path.

    Raises:
        UserError: the folder is missing, or holds no class sub-folder with images.
    """
    root = Path(path)
    if not root.is_dir():
        raise UserError(field, f"folder '{path}' does not exist", "give a folder with one sub-folder of images per class")
    paths, labels, ignored = [], [], 0
    for cls in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(p for p in cls.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if f.suffix.lower() in EXTENSIONS:
                paths.append(str(f))
                labels.append(cls.name)
            else:
                ignored += 1
    if not paths:
        raise UserError(field, f"'{path}' has no class sub-folders with images ({', '.join(sorted(EXTENSIONS))})",
                        "lay it out as FOLDER/CLASS/IMAGE.jpg, one sub-folder per class")
    return paths, labels, ignored


def load_image(path, size: int, resize: int | None = None, resample: str = "bilinear") -> tuple[np.ndarray | None, str | None]:
    """One image (a file, or a PIL image) as uint8 [3, size, size] (shorter side resized to
    `resize`, default `size`, then center-cropped), or (None, the reason it could not be read)."""
    from PIL import Image, ImageOps

    try:
        with (path if isinstance(path, Image.Image) else Image.open(path)) as img:
            w, h = img.size  # from the header: nothing is decoded yet
            if w * h > MAX_PIXELS:
                return None, f"{w} x {h} pixels, over the limit of {MAX_PIXELS // 1_000_000} megapixels"
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                img = Image.new("RGB", rgba.size, (255, 255, 255))
                img.paste(rgba, mask=rgba.getchannel("A"))
            else:
                img = img.convert("RGB")
            side = resize or size
            w, h = img.size
            scale = side / min(w, h)
            filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}
            img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), filters[resample])
            w, h = img.size
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy(), None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # Pillow's ways of saying "not an image I can read"
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"


def load_images(paths: list, size: int, resize: int | None = None, resample: str = "bilinear",
                workers: int = 2) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode many images on `workers` threads.

    Returns:
        (uint8 [n_ok, 3, size, size], the indices of `paths` that decoded, [(path, reason)] of those that did not).
    """
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(lambda p: load_image(p, size, resize, resample), paths))
    ok = [i for i, (img, _) in enumerate(results) if img is not None]
    bad = [(paths[i], reason) for i, (img, reason) in enumerate(results) if img is None]
    images = np.stack([results[i][0] for i in ok]) if ok else np.zeros((0, 3, size, size), dtype=np.uint8)
    return images, ok, bad
