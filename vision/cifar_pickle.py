"""Reading CIFAR-10's python batches without running what a pickle asks to run.

A pickle can call any importable function while it loads, so a data folder that someone else
prepared could run code on this machine. The CIFAR-10 batches hold only dicts, lists, bytes /
str, ints and numpy arrays of plain numeric dtypes; the unpickler below resolves only the few
numpy callables that rebuild such arrays and refuses every other global by name.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from lmprobe.errors import LmprobeError

# The numpy callables the format needs: _reconstruct (protocols 0-4, as the original archive was
# written by Python 2's cPickle) and _frombuffer (protocol 5), under numpy 1 and numpy 2 paths.
_ARRAY_BUILDERS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
}
_DTYPE = {("numpy", "dtype")}
_PLAIN_KINDS = set("biufc")  # bool, signed / unsigned int, float, complex: no objects, no structs


class RefusedPickle(LmprobeError):
    """The file asks for something a CIFAR-10 batch never holds."""


def _plain_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None:
        raise pickle.UnpicklingError(f"array dtype {dtype} is not a plain numeric type")
    return dtype


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ARRAY_BUILDERS:
            return super().find_class(module, name)
        if (module, name) in _DTYPE:
            return _plain_dtype
        raise pickle.UnpicklingError(f"it asks for {module}.{name}")


def load_batch(blob: bytes, name: str) -> dict:
    """The dict in one CIFAR-10 python batch; anything but the format's own contents is refused."""
    try:
        loaded = _CifarUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise RefusedPickle(f"{name} is not a CIFAR-10 python batch ({exc}); refused without loading it: "
                            "pass the original cifar-10-python.tar.gz") from None
    except Exception as exc:
        raise LmprobeError(f"{name} is not a CIFAR-10 python pickle ({type(exc).__name__}): "
                           "pass the original cifar-10-python.tar.gz") from None
    if not isinstance(loaded, dict):
        raise LmprobeError(f"{name} holds a {type(loaded).__name__}, not the dict of a CIFAR-10 batch: "
                           "pass the original cifar-10-python.tar.gz")
    return loaded
