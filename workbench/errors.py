"""Every error workbench raises on purpose derives from `WorkbenchError`.

The message names the thing at fault (file, tensor, node, op, input) so a
notebook user can act on it without reading a traceback from deep inside.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base of all errors raised by workbench for bad input or unsupported models."""


class ModelLoadError(WorkbenchError):
    """The source is not a readable, valid ONNX model."""


class ExternalDataError(ModelLoadError):
    """An initializer's external data is missing, unsafe or inconsistent."""


class UnsupportedOpError(WorkbenchError):
    """No backend implements a node's op at the model's opset."""


class FeedError(WorkbenchError):
    """An input given to `Session.run` does not match the model."""


class AllocationError(WorkbenchError):
    """A tensor would not fit in the memory at hand; refused before allocating."""


class KernelError(WorkbenchError):
    """A kernel failed while running a node; the message names the node."""


class BackendUnavailableError(WorkbenchError):
    """The requested backend cannot run on this machine (the reason is in the message)."""
