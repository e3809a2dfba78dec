"""quantkit: one API over the LLM quantization backends of the PyTorch / Hugging Face world."""

from quantkit import calibration
from quantkit.api import dequantize, inspect, load, quantize, save
from quantkit.catalog import methods
from quantkit.compare import compare
from quantkit.errors import QuantkitError
from quantkit.hardware import Hardware, hardware
from quantkit.report import Report
from quantkit.selector import Recommendation, Recommendations, recommend
from quantkit.version import __version__

__all__ = [
    "Hardware", "QuantkitError", "Report", "__version__", "calibration", "compare", "dequantize", "hardware",
    "inspect", "load", "methods", "quantize", "recommend", "Recommendation", "Recommendations", "save",
]
