"""Central finite-difference gradient checks for functions of Tensors (float64), like torch.autograd.gradcheck.

For f(inputs) -> out and a fixed random upstream gradient u, the scalar L = Σ out ⊙ u has
    dL/dx_i ≈ (L(x + ε e_i) − L(x − ε e_i)) / 2ε     (error O(ε²) plus rounding O(δ/ε), δ ≈ 1e-16·|L|)
which is compared elementwise with the engine's analytic gradient: |analytic − numeric| ≤ atol + rtol·|numeric|.
A random u (not u = 1, i.e. `.sum()`) matters: softmax's and layer_norm's input gradients are identically zero
under a plain sum, which would make the check vacuous.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .tensor import Tensor, get_array_module, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with finite differences; the message names the input and worst index."""


@dataclass
class InputReport:
    """Errors for one input: max |analytic − numeric|, that over max |numeric|, and where the worst one is."""

    index: int
    max_abs: float
    max_rel: float
    worst: tuple[int, ...]
    analytic: float
    numeric: float
    ok: bool


@dataclass
class GradcheckReport:
    """Per-input results (inputs that need no gradient are skipped); `ok` is True when every input passed."""

    inputs: list[InputReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.inputs)

    def __str__(self) -> str:
        return "\n".join(f"input {r.index}: {'ok' if r.ok else 'FAIL'} max_abs={r.max_abs:.3e} "
                         f"max_rel={r.max_rel:.3e} worst index {r.worst} (analytic {r.analytic:.10g}, "
                         f"numeric {r.numeric:.10g})" for r in self.inputs)


def _outputs(out: Any) -> list[Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def gradcheck(fn: Callable[..., Any], inputs: Sequence[Tensor], eps: float = 1e-6, atol: float = 1e-6,
              rtol: float = 1e-5, upstream: Sequence[Any] | None = None, seed: int = 0,
              raise_exception: bool = True) -> GradcheckReport:
    """Compare the analytic gradient of every input with requires_grad against central finite differences.

    fn(*inputs) returns a Tensor or a tuple of Tensors and must be deterministic (reseed inside fn if it draws
    dropout masks). `upstream`: one array per output (default: standard normal, seeded by `seed`). Raises
    GradcheckError naming the input and its worst index on failure (or, with raise_exception=False, returns the
    report with ok False). Inputs must be float64: float32 finite differences are dominated by rounding.
    """
    for i, t in enumerate(inputs):
        if t.requires_grad and t.dtype != np.float64:
            raise TypeError(f"gradcheck input {i} is {t.dtype}; finite differences need float64 (use .double())")
    outs = _outputs(fn(*inputs))
    rng = np.random.default_rng(seed)
    if upstream is None:
        ups = [rng.standard_normal(o.shape) for o in outs]
    else:
        ups = [u.data if isinstance(u, Tensor) else u for u in upstream]
    ups = [get_array_module(o.data).asarray(u, dtype=o.dtype) for o, u in zip(outs, ups)]

    for t in inputs:
        t.grad = None
    loss = None
    for o, u in zip(outs, ups):
        if o.requires_grad:
            term = (o * Tensor(u)).sum()
            loss = term if loss is None else loss + term
    if loss is None:
        raise ValueError("gradcheck: no output depends on an input with requires_grad=True")
    loss.backward()

    def objective() -> float:
        with no_grad():
            return float(sum((o.data * u).sum() for o, u in zip(_outputs(fn(*inputs)), ups)))

    report = GradcheckReport()
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            continue
        analytic = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        numeric = np.zeros(t.shape)
        orig = t.data
        t.data = orig.copy()  # perturb a private copy; the caller's array is restored below
        flat = t.data.reshape(-1)  # a view: writes reach t.data
        for j in range(flat.size):
            x0 = flat[j]
            flat[j] = x0 + eps
            fp = objective()
            flat[j] = x0 - eps
            fm = objective()
            flat[j] = x0
            numeric.reshape(-1)[j] = (fp - fm) / (2 * eps)
        t.data = orig
        diff = np.abs(analytic - numeric)
        worst = np.unravel_index(int(np.argmax(diff - (atol + rtol * np.abs(numeric)))), t.shape) if t.shape else ()
        rep = InputReport(i, float(diff.max(initial=0.0)), float(diff.max(initial=0.0) /
                          max(np.abs(numeric).max(initial=0.0), 1e-300)), tuple(int(w) for w in worst),
                          float(analytic[worst]), float(numeric[worst]),
                          bool(np.all(diff <= atol + rtol * np.abs(numeric))))
        report.inputs.append(rep)
    if raise_exception and not report.ok:
        raise GradcheckError(f"gradient check failed:\n{report}")
    return report


__all__ = ["gradcheck", "GradcheckError", "GradcheckReport", "InputReport"]
