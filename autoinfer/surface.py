"""Where ``Session`` finds the rest of ``InferenceSession``'s surface; its home is
:mod:`autoinfer.backends.onnxruntime_api`."""
from .backends.onnxruntime_api import OrtSurface

__all__ = ["OrtSurface"]
