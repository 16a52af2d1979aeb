"""Taking a pruned model out of psvit: an ONNX file checked against onnxruntime, a ``torch.export`` program, and
an MLflow Model (:mod:`psvit.export.mlflow_model`).

    from psvit.export import export_onnx
    done = export_onnx(psvit.load("pruned.pt"), "pruned.onnx", images)   # writes, checks parity
    print(done.format())
"""

from psvit.export.api import Exported, export_model, export_onnx, verify
from psvit.export.files import FORMATS, Written
from psvit.export.graph import ExportError, exportable
from psvit.export.parity import Parity, Tolerance

__all__ = [
    "FORMATS",
    "ExportError",
    "Exported",
    "Parity",
    "Tolerance",
    "Written",
    "export_model",
    "export_onnx",
    "exportable",
    "verify",
]
