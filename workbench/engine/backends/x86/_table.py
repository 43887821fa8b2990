"""The x86 backend's kernel table; every `ops_*.py` module here registers into it."""

from ..base import KernelTable

kernels = KernelTable()
