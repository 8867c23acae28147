"""`--format onnx` (fp32, batch and sequence axes dynamic) and `--format onnx-int8` (onnxruntime's
dynamic quantization of it: int8 weights with a scale per output channel, activations quantized per batch).

torch.onnx.export's default exporter (dynamo) traces the forward pass through torch.export;
onnxscript writes the graph. Large weights go to model.onnx.data beside model.onnx."""

from __future__ import annotations

from pathlib import Path

import torch

from weitiao.formats import Format, register_format
from weitiao.formats.graph import Logits, dynamic_shapes, quiet
from weitiao.formats.loading import load_onnx

FILE = "model.onnx"


def export_onnx(source, path: Path) -> None:
    example = source.example
    with quiet(), torch.no_grad():
        torch.onnx.export(Logits(source.run.model.eval(), source.inputs), tuple(example.values()), str(path),
                          input_names=source.inputs, output_names=["logits"], dynamic_shapes=(dynamic_shapes(example),), dynamo=True, verbose=False)


def write_fp32(source, folder: Path) -> None:
    export_onnx(source, folder / FILE)


def write_int8(source, folder: Path) -> None:
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="weitiao-onnx-") as tmp:
        fp32 = Path(tmp) / FILE
        export_onnx(source, fp32)
        with quiet():
            # Per-channel weight scales: on MiniLM / SST-2 dev 98.1% of predictions kept (per-tensor: 95.5%), at the same speed.
            # Only the matrix products: dynamically quantized convolutions lose most predictions (EfficientNet-Lite0 on
            # digits kept 26%), and a transformer's work is all MatMul.
            quantize_dynamic(str(fp32), str(folder / FILE), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])


def load(folder: Path, task, manifest: dict):
    return load_onnx(folder, FILE, manifest)


FP32 = register_format(Format("onnx", "ONNX fp32 (onnxruntime)", write_fp32, load, tolerance=1e-4, graph=True))
INT8 = register_format(Format("onnx-int8", "ONNX with int8 weights (onnxruntime dynamic quantization)", write_int8, load, tolerance=None, graph=True))
