"""Image classification: one label (softmax) or several (sigmoid) per image.

Data: an ImageFolder (one sub-folder per class) or a table (CSV/TSV/JSONL/JSON/Parquet) with an
image path column (`data.image_column`, relative to the table's folder) and a label column, or
a table whose other columns are pixel values (`task.pixels`: MNIST-style CSVs, digits).
Images are decoded once, before training, into uint8 arrays at the model's input size
(weitiao/data/images.py); a file that cannot be decoded is skipped and counted. Batches are
normalized as the model was pretrained (its preprocessor_config.json). Models: the bundled
EfficientNet-Lite0 (`model: efficientnet_lite0`) or a local transformers image classifier folder.
Loss, metrics and outputs are the text classifier's (tasks/classification.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from weitiao.data.examples import Examples, LabelSet
from weitiao.errors import UserError
from weitiao.schema import Section
from weitiao.tasks import TaskDefaults, register_task
from weitiao.tasks.common.labels import Labelled, label_tensor
from weitiao.tasks.image_classification.augment import AugmentConfig

if TYPE_CHECKING:
    import numpy as np


class Options(Section):
    """The `task:` section of an image classifier."""

    type: Literal["image_classification"] = "image_classification"
    multi_label: bool = False
    threshold: Annotated[float, Field(gt=0, lt=1)] | Literal["auto"] = "auto"  # multi-label decision threshold on sigmoid; auto: the best validation micro-F1's, saved with the model
    bias_init: Literal["prior", "zero"] = "prior"  # multi-label: the new head's biases start at each label's log-odds in the training data (zero: the library's init)
    augment: AugmentConfig | None = None  # training images only, on the training device (tasks/image_classification/augment.py)
    image_size: int | None = Field(None, ge=8, le=1024)  # the model's input side; default: its preprocessor's
    pixels: "PixelsConfig | None" = None  # rows of pixel values instead of image files


class PixelsConfig(Section):
    """A table whose columns (all but the label column) are one image's pixel values, row-major."""

    shape: tuple[int, int] | tuple[int, int, int]  # [height, width] (grayscale) or [height, width, channels]
    max_value: float = Field(255.0, gt=0)  # the value of white (digits: 16)

    @field_validator("shape")
    @classmethod
    def _drawable(_cls, shape):
        if any(n < 1 or n > 8192 for n in shape[:2]):
            raise ValueError("height and width must be 1 to 8192 pixels")
        if len(shape) == 3 and shape[2] not in (1, 3, 4):
            raise ValueError("channels must be 1 (grayscale), 3 (RGB) or 4 (RGBA)")
        return shape


Options.model_rebuild()


@dataclass
class ImageReader:
    """An ImageFolder, or a table of image paths and labels (read as the text classifier reads its columns)."""

    data: object
    opts: Options
    restrict_labels: bool = True

    @property
    def multi_label(self) -> bool:
        return self.opts.multi_label

    @property
    def stratify_name(self) -> str:
        return "label set" if self.multi_label else "label"

    def _columns(self):
        from weitiao.data import ColumnReader

        return ColumnReader(self.data.model_copy(update={"text_column": self.data.image_column, "text_pair_column": None}), self.multi_label)

    def read(self, path: str, field: str, labels: LabelSet | None) -> tuple[Examples, LabelSet]:
        if self.opts.pixels:
            return self._pixels(path, field, labels)
        if not _is_folder(path):
            ex, labels = self._columns().read(path, field, labels)
            return _relative_to(ex, path), labels
        from weitiao.data.images import image_folder

        paths, names, _ = image_folder(path, field)
        if labels is None:
            labels = LabelSet(self.data.labels or sorted(set(names)))
        unknown = sorted(set(names) - set(labels.names))
        if unknown:
            raise UserError(field, f"'{path}' has a class folder {unknown[0]!r} that is not a label of this run ({labels.names})",
                            "rename or remove that folder, or list every class in data.labels")
        ids = [labels.index[n] if not self.multi_label else [labels.index[n]] for n in names]
        return Examples(paths, None, ids, list(range(1, len(paths) + 1)), path), labels

    def _pixels(self, path: str, field: str, labels: LabelSet | None, with_labels: bool = True) -> tuple[Examples, LabelSet | None]:
        """Rows of pixel values: each example's text is its values, comma-joined (what `encode` draws)."""
        from weitiao.data import label_set
        from weitiao.data.sources import read_table

        d, shape = self.data, self.opts.pixels.shape
        table = read_table(path, field, d.format, d.header, d.columns, (d.label_column,))
        label_col = d.label_column if with_labels else None
        if label_col is not None and label_col not in table.columns:
            raise UserError("data.label_column", f"'{path}' has no column {label_col!r} (columns: {', '.join(table.columns[:8])}, ...)",
                            "name the label column (a file without a header numbers its columns from \"0\")")
        columns = [c for c in table.columns if c != d.label_column]
        need = 1
        for n in shape:
            need *= n
        if len(columns) != need:
            raise UserError("task.pixels.shape", f"{list(shape)} needs {need} pixel columns, '{path}' has {len(columns)} besides the label",
                            "give the image's [height, width] (or [height, width, channels]) as stored in the rows")
        texts = []
        for row, line in zip(table.rows, table.lines):
            values = [row[c] for c in columns]
            try:
                floats = [float(v) for v in values]
            except (TypeError, ValueError):
                bad = next(c for c, v in zip(columns, values) if not _is_number(v))
                raise UserError(field, f"'{path}' line {line} column {bad!r} is {row[bad]!r}, not a pixel value", "give numbers in every pixel column") from None
            top = self.opts.pixels.max_value
            outside = next((c for c, v in zip(columns, floats) if math.isfinite(v) and not 0 <= v <= top), None)
            if outside is not None:
                raise UserError(field, f"'{path}' line {line} column {outside!r} is {row[outside]!r}, outside 0 to {top:g} (task.pixels.max_value)",
                                "set task.pixels.max_value to the value of white in these rows (digits: 16), or rescale them")
            if not all(math.isfinite(v) for v in floats):
                bad = next(c for c, v in zip(columns, floats) if not math.isfinite(v))
                raise UserError(field, f"'{path}' line {line} column {bad!r} is {row[bad]!r}, not a finite pixel value",
                                "give numbers from 0 to task.pixels.max_value in every pixel column")
            texts.append(",".join(f"{v:g}" for v in floats))
        if not with_labels:
            return Examples(texts, None, None, table.lines, table.path), None
        if labels is None:
            labels = label_set(d, table, self.multi_label)
        ids = labels.encode([r.get(d.label_column) for r in table.rows], d.label_separator if self.multi_label else None, field, table)
        return Examples(texts, None, ids, table.lines, table.path), labels

    def read_inputs(self, path: str, field: str) -> Examples:
        if self.opts.pixels:
            return self._pixels(path, field, None, with_labels=False)[0]
        if _is_folder(path):
            from weitiao.data.images import image_folder

            paths = image_folder(path, field)[0]
            return Examples(paths, None, None, list(range(1, len(paths) + 1)), path)
        return _relative_to(self._columns().read_inputs(path, field), path)

    def check_labels(self, labels: LabelSet, field: str, path: str) -> None:
        if len(labels) < 2 and not self.multi_label:
            raise UserError(field, f"'{path}' has only {len(labels)} class(es) {labels.names}", "a classifier needs at least 2 classes")

    def stratify_key(self, ex: Examples, names: list[str]) -> list | None:
        from weitiao.data.split import stratify_key

        return stratify_key(ex.labels)


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _is_folder(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and not (p / "dataset_info.json").is_file() and not (p / "state.json").is_file()


def _relative_to(ex: Examples, table: str) -> Examples:
    """Image paths of a table are relative to the table's folder (absolute ones stay)."""
    base = Path(table).parent
    ex.text = [str(base / p) if p and not Path(p).is_absolute() else p for p in ex.text]
    return ex


@dataclass
class Encoded:
    """Decoded images (uint8 [n, 3, size, size]) and their labels; `skipped`: (path, reason) of the undecodable."""

    images: np.ndarray
    labels: list | None
    processor: object  # image_models.ImageProcessor: normalizes batches as the model was pretrained
    kept: list[int]  # the examples these rows are (unreadable ones are skipped)
    skipped: list[tuple[str, str]]
    truncated: int = 0
    augmenter: object = None  # tasks/image_augment.Augmenter, built at the first augmented batch

    @property
    def lengths(self) -> list[int]:
        return [1] * len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def examples(self) -> int:
        return len(self.images)

    def subset(self, index: list[int]) -> "Encoded":
        labels = None if self.labels is None else [self.labels[i] for i in index]
        return Encoded(self.images[index], labels, self.processor, [self.kept[i] for i in index], [])


def _pixel_image(text: str, pixels: PixelsConfig):
    """A row's pixel values as a PIL image (grayscale or RGB, 8-bit)."""
    import numpy as np
    from PIL import Image

    values = np.array([float(v) for v in text.split(",")], dtype=np.float32)
    values = np.clip(values / pixels.max_value * 255, 0, 255).round().astype(np.uint8).reshape(pixels.shape)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    return Image.fromarray(values, "L" if values.ndim == 2 else "RGB" if values.shape[2] == 3 else "RGBA")


class ImageClassification(Labelled, TaskDefaults):
    """A label (or several) per image."""

    name = "image_classification"
    pipeline_tag = "image-classification"
    distillable = True
    report_section = "labels"
    Options = Options
    data_keys = frozenset({"image_column", "label_column", "label_separator"})
    peft_task_type = "SEQ_CLS"  # peft's name for "a head on a pooled output": saved with the adapter
    reads_one_position = False  # pooled over the whole feature map: no first-token tricks
    takes_images = True
    feature_cache = False  # the layer cache stores token sequences; a model adapter's frozen body is cached instead (BodyCache)
    # Images are resized to the model's input, never cut: nothing is ever "too long".
    too_long = "longer than data.max_length ({n})"
    too_long_fix = "images are resized, not cut"
    too_long_note = "{k} of {n} images were longer than data.max_length ({m})"

    def describe(self, opts) -> str:
        return "multi-label image classification" if opts.multi_label else "image classification"

    def reader(self, data, opts) -> ImageReader:
        return ImageReader(data, opts)

    def processor(self, model_path: str, model_name: str | None = None, max_length: int | None = None):
        from weitiao.models.image import PROCESSOR_FILE, ImageProcessor

        if not (Path(model_path) / PROCESSOR_FILE).is_file():
            raise UserError("model", f"'{model_name or model_path}' has no {PROCESSOR_FILE} (its image size, mean and std)",
                            "save the model's image processor beside it (AutoImageProcessor.from_pretrained(...).save_pretrained(folder))")
        return ImageProcessor.from_pretrained(model_path)

    def encode(self, processor, examples: Examples, max_length: int, opts, names: list[str]) -> Encoded:
        from weitiao.data.images import load_images

        if opts.image_size and processor.size != opts.image_size:  # the run's processor (saved with the model) takes the size
            processor.size = processor.resize = opts.image_size
        if opts.pixels:
            images, kept, skipped = load_images([_pixel_image(t, opts.pixels) for t in examples.text], processor.size, processor.resize, processor.resample)
        else:
            images, kept, skipped = load_images(list(examples.text), processor.size, processor.resize, processor.resample)
        if not kept:
            path, reason = skipped[0]
            raise UserError(examples.source, f"none of its {len(skipped)} images could be decoded (first: '{path}': {reason})",
                            "check the paths and that the files are images")
        labels = None if examples.labels is None else [examples.labels[i] for i in kept]
        return Encoded(images, labels, processor, kept, skipped)

    def build(self, model_path, label_names, opts, dropout=None, attention=None, pad_token_id=None):
        from weitiao.models.image import build_image_model

        return build_image_model(model_path, label_names, opts.multi_label, (dropout or {}).get("classifier"))

    def collate(self, encoded: Encoded, index: list[int], pad_id: int, num_labels: int, opts, multiple: int = 1) -> dict:
        """pixel_values: [batch, 3, size, size] float, normalized; labels as the text classifier's."""
        import torch

        batch = {"pixel_values": encoded.processor.normalize(torch.from_numpy(encoded.images[index]))}
        if encoded.labels is not None:
            batch["labels"] = label_tensor([encoded.labels[i] for i in index], num_labels, opts.multi_label)
        return batch

    def augment(self, batch: dict, encoded: Encoded, opts) -> dict:
        """A training batch, on its device, augmented as task.augment says (else as it is)."""
        if not opts.augment or not opts.augment.active():
            return batch
        if getattr(encoded, "augmenter", None) is None:
            from weitiao.tasks.image_classification.augment import Augmenter

            encoded.augmenter = Augmenter(opts.augment, encoded.processor)
        return {**batch, "pixel_values": encoded.augmenter(batch["pixel_values"])}

    def metrics(self, outputs: list, encoded: Encoded, label_names: list[str], opts) -> dict:
        metrics = super().metrics(outputs, encoded, label_names, opts)
        metrics["unreadable_images"] = len(encoded.skipped)
        return metrics

    def decode(self, outputs: list, encoded: Encoded, examples: Examples, label_names: list[str], opts) -> list[dict]:
        kept = Examples([examples.text[i] for i in encoded.kept], None, None, [], examples.source)
        rows = super().decode(outputs, encoded, kept, label_names, opts)
        return [{"image": r.pop("text"), **r} for r in rows]

    def csv_columns(self, rows: list[dict]):
        header, cells = super().csv_columns([{"text": r["image"], **r} for r in rows[:1]])
        return ["image"] + header[1:], lambda r: cells({"text": r["image"], **r})

    def examples_from_texts(self, paths: list[str], processor, opts) -> Examples:
        if opts.pixels:
            raise UserError("--image", "this run reads rows of pixel values (task.pixels), not image files",
                            "predict with --file, a table of pixel values laid out as the training data")
        missing = next((p for p in paths if not Path(p).is_file()), None)
        if missing is not None:
            raise UserError("--image", f"file '{missing}' does not exist", "give paths of image files")
        return Examples(list(paths), None, None, list(range(1, len(paths) + 1)), "--image")

    def load(self, model_dir):
        from weitiao.models.image import load_image_model

        return load_image_model(model_dir)


TASK = register_task(ImageClassification())
