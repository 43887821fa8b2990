"""The reference backend's own kernels (where onnx.reference is slow or wrong)."""

from ..base import KernelTable

kernels = KernelTable()
