"""The test helper (tinygrad-shaped): run the same op through torch and tinytensor and compare everything.

`check_op` builds identical inputs for both, runs forward, backpropagates a *random* upstream gradient
(loss = Σ out ⊙ dout, never a bare `.sum()`, under which softmax/layer_norm input gradients vanish identically and
the check would pass vacuously), and compares shape, dtype, values and every input's gradient. Error metric per
tensor: max |ours − torch| / max |torch|, with the denominator floored at `floor` × the largest gradient of the
call (DESIGN §5: mathematically-zero gradients are rounding noise on both sides). `check_raises` is its twin for
errors: both sides must raise, ours an instance of torch's exception type (the same type, or a subclass such as
tinytensor's ShapeError, a ValueError that is also torch's RuntimeError: code that catches torch's error catches it).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

import tinytensor as tt

_TORCH_DTYPE = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}


def _make_inputs(shapes_or_inputs: Sequence[Any], dtype, seed: int) -> list[np.ndarray]:
    """Shapes become standard-normal arrays of `dtype`; float arrays are cast to `dtype`; others pass as they are."""
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes_or_inputs:
        if isinstance(s, tuple):
            out.append(rng.standard_normal(s).astype(dtype))
        else:
            a = np.asarray(s)
            out.append(a.astype(dtype) if a.dtype.kind == "f" else a)
    return out


def rel_error(ours: np.ndarray, ref: np.ndarray, floor: float = 0.0) -> tuple[float, float, tuple]:
    """(max abs error, max abs error / max(max |ref|, floor), index of the worst element)."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if ours.size == 0:
        return 0.0, 0.0, ()
    diff = np.abs(ours - ref)
    diff = np.where(np.isnan(ours) & np.isnan(ref), 0.0, diff)  # nan in the same place is agreement
    diff = np.where(np.isnan(diff), np.inf, diff)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    finite = np.abs(ref[np.isfinite(ref)])
    denom = max(float(finite.max(initial=0.0)), floor, 1e-300)
    return float(diff.max()), float(diff.max() / denom), tuple(int(w) for w in worst)


def assert_close(name: str, ours: np.ndarray, ref: np.ndarray, rtol: float, floor: float = 0.0) -> float:
    """Fail with the max abs/rel error and the worst index when max|ours − ref| / max|ref| > rtol."""
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != torch {ref.shape}"
    abs_err, rel, worst = rel_error(ours, ref, floor)
    assert rel <= rtol, (f"{name}: max rel error {rel:.3e} > {rtol:.1e} (max abs {abs_err:.3e}) at index {worst}: "
                         f"ours {np.asarray(ours)[worst]!r}, torch {np.asarray(ref)[worst]!r}")
    return rel


def check_op(torch_fn: Callable[..., Any], ours_fn: Callable[..., Any], shapes_or_inputs: Sequence[Any],
             rtol: float = 1e-10, dtype=np.float64, seed: int = 0, grad: bool = True, floor: float = 1e-6) -> None:
    """Run torch_fn and ours_fn on the same inputs (float ones require grad) and compare outputs and gradients.

    shapes_or_inputs: tuples (random normal of that shape) or arrays (integer arrays are passed without grad).
    Both functions receive their library's tensors, in order.
    """
    arrays = _make_inputs(shapes_or_inputs, dtype, seed)
    float_in = [a.dtype.kind == "f" for a in arrays]
    t_in = [torch.tensor(a, requires_grad=grad and f) for a, f in zip(arrays, float_in)]
    o_in = [tt.Tensor(a.copy(), requires_grad=grad and f) for a, f in zip(arrays, float_in)]
    t_out, o_out = torch_fn(*t_in), ours_fn(*o_in)
    assert isinstance(o_out, tt.Tensor), f"ours returned {type(o_out).__name__}, not a Tensor"
    assert o_out.shape == tuple(t_out.shape), f"output shape {o_out.shape} != torch {tuple(t_out.shape)}"
    assert _TORCH_DTYPE.get(o_out.dtype) == t_out.dtype, f"output dtype {o_out.dtype} != torch {t_out.dtype}"
    assert_close("output", o_out.numpy(), t_out.detach().numpy(), rtol)
    if not grad or not t_out.requires_grad:
        return
    dout = np.random.default_rng(seed + 1).standard_normal(o_out.shape).astype(o_out.dtype)
    (t_out * torch.tensor(dout)).sum().backward()
    (o_out * tt.Tensor(dout)).sum().backward()
    t_grads = [t.grad.numpy() if t.grad is not None else np.zeros(t.shape) for t, f in zip(t_in, float_in) if f]
    o_grads = [o.grad.numpy() if o.grad is not None else np.zeros(o.shape) for o, f in zip(o_in, float_in) if f]
    top = max((float(np.abs(g).max(initial=0.0)) for g in t_grads), default=0.0)
    for i, (og, tg) in enumerate(zip(o_grads, t_grads)):
        assert og.dtype == tg.dtype, f"grad of input {i}: dtype {og.dtype} != torch {tg.dtype}"
        assert_close(f"grad of input {i}", og, tg, rtol, floor * top)


def check_raises(torch_fn: Callable[..., Any], ours_fn: Callable[..., Any], shapes_or_inputs: Sequence[Any],
                 dtype=np.float64, match: str | None = None) -> BaseException:
    """Both functions must raise, ours an instance of torch's exception type; `match` (a substring) is checked in
    ours' message."""
    arrays = _make_inputs(shapes_or_inputs, dtype, 0)
    errors = []
    for fn, wrap in ((torch_fn, torch.tensor), (ours_fn, tt.Tensor)):
        try:
            fn(*[wrap(a) for a in arrays])
        except Exception as e:  # noqa: BLE001 - any exception type is what we compare
            errors.append(e)
        else:
            errors.append(None)
    t_err, o_err = errors
    assert t_err is not None, "torch did not raise"
    assert o_err is not None, f"ours did not raise (torch raised {type(t_err).__name__}: {t_err})"
    assert isinstance(o_err, type(t_err)), (f"ours raised {type(o_err).__name__}: {o_err}; "
                                        f"torch raised {type(t_err).__name__}: {t_err}")
    if match is not None:
        assert match in str(o_err), f"message {str(o_err)!r} does not contain {match!r}"
    return o_err


def fused_and_composite(fused: Callable, composite: Callable, arrays: Sequence[np.ndarray], seed: int = 0
                        ) -> list[list[np.ndarray]]:
    """Outputs and input gradients of a fused op and its composite twin for the same inputs, random upstream
    gradient and RNG seed (dropout masks): [[out, *grads] of fused, [out, *grads] of composite]."""
    from tinytensor.random import manual_seed

    dout, results = None, []
    for fn in (fused, composite):
        ins = [tt.Tensor(a.copy(), requires_grad=True) for a in arrays]
        manual_seed(seed)
        out = fn(*ins)
        if dout is None:
            dout = np.random.default_rng(1).standard_normal(out.shape)
        (out * tt.Tensor(dout)).sum().backward()
        results.append([out.numpy()] + [t.grad.numpy() for t in ins])
    return results
