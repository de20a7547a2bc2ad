"""Exporting a quality model for serving without this package's torch code: ONNX (`export_onnx`) and an
onnxruntime scorer (`OnnxScorer`). onnx / onnxscript / onnxruntime come with the `[onnx]` extra; they are
imported when an export or a scorer is used, with an ImportError naming the extra when missing."""

from .onnx import EXPORTED_OUTPUTS, INSTALL_HINT, OnnxScorer, export_onnx, preprocessor_config_path

__all__ = ["EXPORTED_OUTPUTS", "INSTALL_HINT", "OnnxScorer", "export_onnx", "preprocessor_config_path"]
