"""Augmentation of training images (kornia): named in `task.augment`, applied to each training
batch on the training device after it arrives there, never to validation, test or prediction.

```yaml
task:
  type: image_classification
  augment: [random_resized_crop, horizontal_flip]      # names with their defaults, or:
  augment: {random_resized_crop: {scale: [0.5, 1.0]}, rotation: 15, color_jitter: 0.2, trivial_augment: true}
```

The order is fixed: crop, flips, rotation, color jitter, then the policy (TrivialAugment or
RandAugment, one of them). Draws come from torch's global generator, which the checkpoint
saves: a resumed run sees the same augmented images as an uninterrupted one.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from weitiao.schema import Section


class CropConfig(Section):
    scale: tuple[float, float] = (0.08, 1.0)  # the share of the image's area a crop keeps
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


class JitterConfig(Section):
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)


class RandAugmentConfig(Section):
    n: int = Field(2, ge=1)  # operations per image
    m: int = Field(9, ge=0, le=30)  # their magnitude


class AugmentConfig(Section):
    """Training-image augmentations; `true` takes an augmentation's defaults."""

    random_resized_crop: CropConfig | None = None
    horizontal_flip: bool = False
    vertical_flip: bool = False
    rotation: float | None = Field(None, gt=0, le=180)  # degrees either way
    color_jitter: JitterConfig | None = None
    trivial_augment: bool = False
    rand_augment: RandAugmentConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, raw):
        if isinstance(raw, (list, tuple)):  # [random_resized_crop, horizontal_flip]
            bad = [n for n in raw if not isinstance(n, str)]
            if bad:
                raise ValueError(f"a list of augmentation names, got {bad[0]!r}")
            raw = {name: True for name in raw}
        if isinstance(raw, dict):
            raw = dict(raw)
            for key in ("random_resized_crop", "rand_augment"):
                if raw.get(key) is True:
                    raw[key] = {}
                elif raw.get(key) is False:
                    raw[key] = None
            jitter = raw.get("color_jitter")
            if jitter is True:
                raw["color_jitter"] = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2}
            elif jitter is False:
                raw["color_jitter"] = None
            elif isinstance(jitter, (int, float)):
                raw["color_jitter"] = {"brightness": jitter, "contrast": jitter, "saturation": jitter}
            if raw.get("rotation") is True:
                raw["rotation"] = 15.0
        return raw

    @model_validator(mode="after")
    def _one_policy(self):
        if self.trivial_augment and self.rand_augment:
            raise ValueError("trivial_augment and rand_augment are both policies: choose one")
        return self

    def active(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name) not in (None, False)]


def build(cfg: AugmentConfig, size: int):
    """The kornia pipeline for images of `size` x `size`, on [0, 1] floats."""
    import kornia.augmentation as K
    from kornia.augmentation import auto
    from torch import nn

    ops = []
    if cfg.random_resized_crop:
        ops.append(K.RandomResizedCrop((size, size), scale=cfg.random_resized_crop.scale, ratio=cfg.random_resized_crop.ratio))
    if cfg.horizontal_flip:
        ops.append(K.RandomHorizontalFlip())
    if cfg.vertical_flip:
        ops.append(K.RandomVerticalFlip())
    if cfg.rotation:
        ops.append(K.RandomRotation(cfg.rotation, p=1.0))
    if cfg.color_jitter:
        j = cfg.color_jitter
        ops.append(K.ColorJitter(j.brightness, j.contrast, j.saturation, j.hue, p=1.0))
    if cfg.trivial_augment:
        ops.append(auto.TrivialAugment())
    if cfg.rand_augment:
        ops.append(auto.RandAugment(cfg.rand_augment.n, cfg.rand_augment.m))
    return nn.Sequential(*ops)


class Augmenter:
    """Un-normalize a batch of model inputs, augment it, normalize it again (on its device)."""

    def __init__(self, cfg: AugmentConfig, processor):
        import torch

        self.pipeline = build(cfg, processor.size)
        self.mean = torch.tensor(processor.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.std).view(1, 3, 1, 1)

    def __call__(self, pixel_values):
        import torch

        mean, std = self.mean.to(pixel_values.device), self.std.to(pixel_values.device)
        with torch.no_grad():
            images = (pixel_values * std + mean).clamp_(0, 1)
            images = self.pipeline(images).clamp_(0, 1)
            return (images - mean) / std
