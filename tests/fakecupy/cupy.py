"""The stand-in `cupy` module: a device array (`ndarray`) backed by a private NumPy array, and CuPy's functions.

Why a wrapper and not a NumPy subclass: `np.asarray(subclass_instance)` returns the base array without calling
`__array__`, so a subclass cannot refuse the implicit conversion that CuPy refuses. A plain object that holds its
NumPy array privately and implements `__array__` (raises), `__array_ufunc__` and `__array_function__` (dispatch to
this module, as `cupy.ndarray` does) behaves like CuPy at every boundary that matters:

- `np.asarray(a)`, `np.array(a)`: TypeError, CuPy's message ("Implicit conversion to a NumPy array is not allowed.
  Please use `.get()` to construct a NumPy array explicitly.", cupy/_core/core.pyx `__array__`).
- `a.get()`, `cupy.asnumpy(a)`, and what CuPy implements through `get()`: `item()`, `tolist()`, `float()`, `int()`,
  `complex()`, `bool()` of a one-element array, `repr`/`str`/`format`: each is one device-to-host transfer, recorded
  in `transfers`. (float() of a 0-d array works, as in CuPy; of a larger array it fails as NumPy's float() does,
  after the copy, as CuPy's `float(self.get())` does.)
- A NumPy array as an operand of an elementwise op, a reduction's `out=`, or as the value of `a[...] = v`:
  TypeError "Unsupported type <class 'numpy.ndarray'>" (CuPy's kernel argument check, _scalar.pyx CScalar; and
  "Refuse assignment from CPU arrays", gh-2079). NumPy and Python scalars are fine, as in CuPy.
- `np.<func>(a)` dispatches to `cupy.<func>` (NEP 18), so `np.` where `xp.` was meant works when its inputs are
  device arrays, as with real CuPy, and fails when it mixes in a host array.
- Iteration yields 0-d/sub device arrays (no transfer) and raises TypeError on a 0-d array; `len()` of a 0-d array
  raises TypeError (core.pyx `__iter__`, `__len__`). There is no `__index__`: a device scalar is no Python index.
- Integer/boolean NumPy arrays and lists used as indices are copied to the device (recorded as host-to-device), as
  CuPy's `_prepare_slice_list` does. Boolean-mask indexing and assignment read the mask's count back to size the
  result (`int(mask_scanned[-1])` in _routines_indexing.pyx): one device-to-host transfer each, recorded.
- Out-of-bounds integer-array indices wrap around instead of raising, as CuPy's do (docs: "Differences between CuPy
  and NumPy", out-of-bounds indices).
- Reductions and scalar indexing return 0-d device arrays, never host scalars.
- `a.data` is a memory pointer, not an array (code that confuses a Tensor's `.data` with an array's fails).
"""
from __future__ import annotations

import math
import sys
import types
from typing import Any

import numpy as _np
# dtypes and constants, as cupy re-exports them from numpy
from numpy import (bool_, dtype, e, float16, float32, float64, inf, int8, int16, int32, int64, nan,  # noqa: F401
                   newaxis, pi, uint8, uint16, uint32, uint64)

from . import log as _log

transfers = _log.transfers
_UNSUPPORTED = "Unsupported type {}"


def _operand(x: Any) -> Any:
    """The NumPy value a CuPy kernel would accept for `x`: a device array's buffer, or a scalar; TypeError else."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        raise TypeError(_UNSUPPORTED.format(type(x)))
    if isinstance(x, (list, tuple)):  # sequences of arrays (concatenate, stack) are unwrapped element by element
        return type(x)(_operand(v) for v in x)
    return x


def _wrap(x: Any) -> Any:
    """Results stay on the device: arrays and NumPy scalars become device arrays (CuPy returns 0-d arrays)."""
    if isinstance(x, _np.ndarray):
        return ndarray._of(x)
    if isinstance(x, _np.generic):
        return ndarray._of(_np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _kernel(fn: Any, name: str):
    """`fn` as a CuPy routine: operands must be device arrays or scalars; results are device arrays."""
    def routine(*args: Any, **kwargs: Any) -> Any:
        if name in _SIZE_SYNCS:
            _log.record("d2h", f"{name} result size")
        if isinstance(fn, _np.ufunc):   # a ufunc's operands are arrays or scalars: CuPy refuses a list (CScalar)
            for v in args:
                if isinstance(v, (list, tuple)):
                    raise TypeError(_UNSUPPORTED.format(type(v)))
        out = kwargs.get("out")
        a = [_operand(v) for v in args]
        kw = {k: _operand(v) for k, v in kwargs.items()}
        res = fn(*a, **kw)
        return out if isinstance(out, ndarray) else _wrap(res)

    routine.__name__ = name
    return routine


def _index(key: Any) -> Any:
    """An index for the NumPy buffer: device arrays unwrapped; host arrays and lists copied to the device first."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, (_np.ndarray, list)):
        _log.record("h2d", "host index array")
        arr = _np.asarray(key)
        if arr.dtype.kind not in "biu":
            raise IndexError(f"arrays used as indices must be of integer or boolean type (actual: {arr.dtype.type})")
        return arr
    return key


def _wrap_around(key: Any, shape: tuple[int, ...]) -> Any:
    """CuPy wraps out-of-bounds integer-array indices around instead of raising (its documented difference from
    NumPy): ids taken modulo the axis length, for keys of ints, slices and integer arrays (others: NumPy's rules)."""
    parts = key if isinstance(key, tuple) else (key,)
    if any(p is None or p is Ellipsis or getattr(p, "dtype", None) == _np.bool_ for p in parts) or \
            len(parts) > len(shape):
        return key
    out = tuple(p % shape[i] if isinstance(p, _np.ndarray) and p.dtype.kind in "iu" and shape[i] else p
                for i, p in enumerate(parts))
    return out if isinstance(key, tuple) else out[0]


def _mask_syncs(key: Any) -> None:
    """Boolean-mask indexing reads the number of True entries back to the host (one transfer per mask)."""
    for k in key if isinstance(key, tuple) else (key,):
        if getattr(k, "dtype", None) == _np.bool_ and getattr(k, "ndim", 0) > 0:
            _log.record("d2h", "boolean mask count")


_PASS_ATTRS = {"shape", "dtype", "ndim", "size", "itemsize", "nbytes", "strides", "flags"}
_HOST_METHODS = {"item", "tolist", "tobytes"}   # implemented by CuPy as self.get().<method>()
_SIZE_SYNCS = {"nonzero", "flatnonzero", "argwhere", "unique", "compress"}   # the result's size is read back


class _MemoryPointer:
    """What `cupy.ndarray.data` is: a pointer into device memory, not an array."""

    def __init__(self, arr: _np.ndarray):
        self.ptr = arr.__array_interface__["data"][0]
        self.device = cuda.Device(0)

    def __repr__(self) -> str:
        return f"<MemoryPointer 0x{self.ptr:x} (fake cupy)>"


class ndarray:
    """A device array: NumPy-backed, with CuPy's conversion, mixing and transfer rules (see the module docstring)."""

    __array_priority__ = 100   # CuPy's, below tinytensor.Tensor's 1000: ndarray + Tensor goes to Tensor.__radd__
    __hash__ = None            # CuPy arrays are unhashable (they define ==)
    __slots__ = ("_a",)

    def __init__(self, shape: Any, dtype: Any = float, order: str = "C"):
        self._a = _np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _of(cls, arr: _np.ndarray) -> "ndarray":
        obj = cls.__new__(cls)
        obj._a = arr
        return obj

    # ---- the host boundary ----
    def __array__(self, dtype: Any = None, copy: Any = None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def get(self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> _np.ndarray:
        """A host copy: one device-to-host transfer."""
        _log.record("d2h", f"get {self._a.shape}")
        res = _np.array(self._a, order=order)
        if out is not None:
            out[...] = res
            return out
        return res

    def __float__(self) -> float:
        return float(self.get())

    def __int__(self) -> int:
        return int(self.get())

    def __complex__(self) -> complex:
        return complex(self.get())

    def __bool__(self) -> bool:
        if self._a.size > 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous. "
                             "Use a.any() or a.all()")
        return bool(self.get()) if self._a.size == 1 else False

    def __repr__(self) -> str:
        return repr(self.get())

    def __str__(self) -> str:
        return str(self.get())

    def __format__(self, spec: str) -> str:
        return format(self.get(), spec)

    def __reduce__(self):
        return array, (self.get(),)

    def __copy__(self) -> "ndarray":
        return ndarray._of(self._a.copy())

    def __deepcopy__(self, memo: dict) -> "ndarray":
        return ndarray._of(self._a.copy())   # a device-to-device copy, as CuPy's

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __len__(self) -> int:
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._a.shape[0]

    # ---- attributes and methods ----
    @property
    def data(self) -> _MemoryPointer:
        return _MemoryPointer(self._a)

    @property
    def device(self) -> "cuda.Device":
        return cuda.Device(0)

    @property
    def T(self) -> "ndarray":
        return ndarray._of(self._a.T)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):   # no __array_interface__, __array_struct__, ... : NumPy must not see the buffer
            raise AttributeError(name)
        if name in _PASS_ATTRS:
            return getattr(self._a, name)
        attr = getattr(self._a, name)   # AttributeError for what NumPy lacks too
        if name in _HOST_METHODS:
            def host(*args: Any, **kwargs: Any) -> Any:
                return getattr(self.get(), name)(*args, **kwargs)
            return host
        if not callable(attr):
            return _wrap(attr)
        if name in ("transpose", "reshape"):   # shapes/axes may be host sequences (CuPy converts them to ints)
            def shaped(*args: Any, **kwargs: Any) -> Any:
                return _wrap(attr(*(tuple(int(i) for i in a) if isinstance(a, _np.ndarray) else a for a in args),
                                  **kwargs))
            return shaped
        return _kernel(attr, name)

    def __getitem__(self, key: Any) -> "ndarray":
        key = _wrap_around(_index(key), self._a.shape)
        _mask_syncs(key)
        return _wrap(self._a[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        key = _wrap_around(_index(key), self._a.shape)
        _mask_syncs(key)
        self._a[key] = _operand(value) if not isinstance(value, (list, tuple)) else _refuse(value)

    # ---- NumPy protocols: dispatch to this module, as cupy.ndarray does ----
    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        fn = getattr(ufunc, method) if method != "__call__" else ufunc
        out = kwargs.get("out")
        if out is not None:
            out = out if isinstance(out, tuple) else (out,)
            kwargs["out"] = tuple(_operand(o) for o in out)
        if method == "at":   # ufunc.at(a, indices, b): the indices follow indexing rules
            a, idx, *rest = inputs
            fn(_operand(a), _index(idx), *(_operand(r) for r in rest))
            return None
        res = fn(*(_operand(x) for x in inputs), **kwargs)
        if out is not None and all(isinstance(o, ndarray) for o in out):
            return out[0] if len(out) == 1 else out
        return _wrap(res)

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        mine = _FUNCTIONS.get(func.__name__) or _generic(func.__name__)
        if mine is None:
            return NotImplemented
        return mine(*args, **kwargs)


def _refuse(value: Any) -> None:
    raise TypeError(_UNSUPPORTED.format(type(value)))


def _binary(name: str, reflected: bool = False, inplace: bool = False):
    ufunc = getattr(_np, name)

    def op(self: ndarray, other: Any) -> Any:
        other_ufunc = getattr(type(other), "__array_ufunc__", _MISSING)
        if other_ufunc is None or (other_ufunc is _MISSING and
                                   getattr(other, "__array_priority__", 0) > ndarray.__array_priority__):
            return NotImplemented   # CuPy's _should_use_rop: let e.g. tinytensor.Tensor handle it
        if inplace:
            ufunc(self._a, _operand(other), out=self._a)
            return self
        a, b = (_operand(other), self._a) if reflected else (self._a, _operand(other))
        return _wrap(ufunc(a, b))

    return op


_MISSING = object()
for _dunder, _ufunc in {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
                        "floordiv": "floor_divide", "mod": "remainder", "pow": "power", "matmul": "matmul",
                        "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor"}.items():
    setattr(ndarray, f"__{_dunder}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_dunder}__", _binary(_ufunc, reflected=True))
    setattr(ndarray, f"__i{_dunder}__", _binary(_ufunc, inplace=True))
for _dunder, _ufunc in {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
                        "eq": "equal", "ne": "not_equal"}.items():
    setattr(ndarray, f"__{_dunder}__", _binary(_ufunc))
for _dunder, _ufunc in {"neg": "negative", "pos": "positive", "abs": "absolute", "invert": "invert"}.items():
    setattr(ndarray, f"__{_dunder}__", (lambda u: lambda self: _wrap(u(self._a)))(getattr(_np, _ufunc)))
ndarray.__module__ = "cupy"   # tinytensor.get_array_module and gpt.nn.to_numpy_any recognise CuPy by module name


# ---------------------------------------------------------------- the host <-> device functions
def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    """A device array; a host array or list is copied to the device (one host-to-device transfer)."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == _np.dtype(dtype) else ndarray._of(a._a.astype(dtype))
    if not (isinstance(a, (list, tuple)) and any(isinstance(v, ndarray) for v in a)):
        _log.record("h2d", "asarray")   # a host array, list or scalar: CuPy allocates and copies, even for 0-d
    return ndarray._of(_np.array(_host_only(a), dtype=dtype, order=order or "K"))


def array(obj: Any, dtype: Any = None, copy: Any = True, order: str = "K", ndmin: int = 0) -> ndarray:
    """cupy.array: always a new device array (copy=True)."""
    if isinstance(obj, ndarray):
        return ndarray._of(_np.array(obj._a, dtype=dtype, order=order, ndmin=ndmin))
    if not (isinstance(obj, (list, tuple)) and any(isinstance(v, ndarray) for v in obj)):
        _log.record("h2d", "array")
    return ndarray._of(_np.array(_host_only(obj), dtype=dtype, order=order, ndmin=ndmin))


def _host_only(a: Any) -> Any:
    """A host value as it is; a sequence of device arrays is assembled on the device (CuPy does so, no transfer)."""
    if isinstance(a, (list, tuple)) and any(isinstance(v, ndarray) for v in a):
        return _np.array([_operand(v) for v in a])
    return a


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> _np.ndarray:
    """A host copy of a device array (one transfer); host values are returned as NumPy arrays unchanged."""
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args: Any) -> types.ModuleType:
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    return ndarray._of(_np.ascontiguousarray(_operand(a), dtype=dtype))


def split(ary: ndarray, indices_or_sections: Any, axis: int = 0) -> list:
    """cupy.split: the split points are host integers (a host array of them is fine, as in CuPy)."""
    pts = indices_or_sections
    pts = [int(i) for i in pts] if isinstance(pts, (_np.ndarray, list, tuple)) else int(pts)
    return _wrap(_np.split(_operand(ary), pts, axis=axis))


def copyto(dst: ndarray, src: Any, casting: str = "same_kind", where: Any = None) -> None:
    """cupy.copyto: a one-element host array is allowed as a scalar; a larger one is refused."""
    if isinstance(src, _np.ndarray):
        if src.size != 1:
            raise ValueError("non-scalar numpy.ndarray cannot be used for copyto")
        src = src.squeeze()[()]
    _np.copyto(_operand(dst), _operand(src), casting=casting, where=True if where is None else _operand(where))


# ---------------------------------------------------------------- random, cuda
class _RandomState:
    """cupy.random.RandomState: its own stream (CuPy's cuRAND differs from NumPy's; so does this one)."""

    def __init__(self, seed: int | None = None):
        self._rng = _np.random.default_rng([0xC0FFEE, 0 if seed is None else int(seed)])

    def random_sample(self, size: Any = None, dtype: Any = float) -> ndarray:
        return ndarray._of(_np.asarray(self._rng.random(size, dtype=_np.dtype(dtype))))

    def standard_normal(self, size: Any = None, dtype: Any = float) -> ndarray:
        return ndarray._of(_np.asarray(self._rng.standard_normal(size, dtype=_np.dtype(dtype))))


random = types.ModuleType("cupy.random")
random.RandomState = _RandomState


class _Stream:
    def synchronize(self) -> None:
        return None


class _Device:
    """cupy.cuda.Device: one device, id 0 (the tests ask for more only to see the error)."""

    def __init__(self, device: int | None = None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError(f"CUDA error: invalid device ordinal {self.id} (the fake CuPy has one device)")

    def use(self) -> None:
        return None

    def synchronize(self) -> None:
        return None

    def __enter__(self) -> "_Device":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


cuda = types.ModuleType("cupy.cuda")
cuda.Device = _Device
cuda.Stream = _Stream
cuda.get_current_stream = lambda: _Stream()
cuda.runtime = types.ModuleType("cupy.cuda.runtime")
cuda.runtime.getDeviceCount = lambda: 1
cuda.runtime.getDeviceProperties = lambda i: {"name": b"fake CuPy (NumPy on the CPU)", "totalGlobalMem": 0}


# ---------------------------------------------------------------- every other NumPy routine, as a device routine
_FUNCTIONS: dict[str, Any] = {"asarray": asarray, "array": array, "ascontiguousarray": ascontiguousarray,
                              "split": split, "copyto": copyto, "asnumpy": asnumpy}
finfo, iinfo, result_type, can_cast = _np.finfo, _np.iinfo, _np.result_type, _np.can_cast
_NOT_IN_CUPY = {"frompyfunc", "vectorize", "asanyarray", "ndarray", "memmap", "load", "save", "fromfile", "genfromtxt",
                "loadtxt", "savetxt", "savez"}


def _generic(name: str) -> Any:
    fn = getattr(_np, name, None)
    if fn is None or name in _NOT_IN_CUPY or not callable(fn) or isinstance(fn, type):
        return None
    return _kernel(fn, name)


def __getattr__(name: str) -> Any:
    fn = _generic(name)
    if fn is None:
        raise AttributeError(f"module 'cupy' (fake) has no attribute {name!r}")
    globals()[name] = fn   # cache: later lookups are plain attribute reads
    return fn


def _erf(x: Any) -> Any:
    try:
        from scipy.special import erf
    except ImportError:
        erf = _np.frompyfunc(math.erf, 1, 1)
    a = _operand(x)
    return _wrap(_np.asarray(erf(a)).astype(a.dtype if hasattr(a, "dtype") else float))
