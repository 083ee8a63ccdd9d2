"""Optimizers and gradient clipping with torch.optim's semantics, updating parameters in place.

AdamW follows Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (2019), Algorithm 2, in the exact
form of torch.optim.AdamW's single-tensor path (decay first, then the bias-corrected Adam step), so ten steps in
float64 agree with torch to rounding. On NumPy, AdamW keeps parameters, gradients and moments in one flat buffer
each (`FlatBuffers`), so a step is a handful of cache-blocked passes and allocates nothing. Parameter groups are
dicts as in torch (`opt.param_groups[0]["lr"] = ...` changes the rate).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .kernels.adamw import adamw_update, adamw_update_blocked
from .tensor import Parameter, Tensor, get_array_module


class Optimizer:
    """Base: parameter groups with per-group options, per-parameter state, zero_grad, state_dict."""

    defaults: dict[str, Any] = {}

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], defaults: dict[str, Any]):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for grp in groups:
            g = {**defaults, **grp, "params": list(grp["params"])}
            for p in g["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one parameter group")
                seen.add(id(p))
            self.param_groups.append(g)
        self.state: dict[int, dict[str, Any]] = {}

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (set to None, as torch's default, or fill with zeros)."""
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data[...] = 0

    def state_dict(self) -> dict[str, Any]:
        """{'state': {index: {name: array or number}}, 'param_groups': [options + 'params': indices]} as torch."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {index[pid]: {k: (v.copy() if hasattr(v, "copy") else v) for k, v in st.items() if k != "scratch"}
                 for pid, st in self.state.items()}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore options and per-parameter state saved by state_dict (parameters matched by position)."""
        params = self._params()
        if len(sd["param_groups"]) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(sd['param_groups'])} parameter groups, optimizer has "
                             f"{len(self.param_groups)}")
        for g, sg in zip(self.param_groups, sd["param_groups"]):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError("state_dict parameter groups differ in size from the optimizer's")
            g.update({k: v for k, v in sg.items() if k != "params"})
        self.state = {}
        for i, st in sd["state"].items():
            p = params[int(i)]
            xp = get_array_module(p.data)
            new = {}
            for k, v in st.items():
                if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
                    if tuple(v.shape) != p.shape:
                        raise ValueError(f"optimizer state {k!r} of parameter {i} has shape {tuple(v.shape)}, "
                                         f"the parameter has {p.shape}")
                    v = xp.asarray(v, dtype=p.dtype).copy()
                elif hasattr(v, "item"):
                    v = v.item()
                new[k] = v
            self.state[id(p)] = new


class SGD(Optimizer):
    """SGD with momentum, dampening, Nesterov and L2 weight decay, as torch.optim.SGD.

    b ← μ·b + (1 − τ)·g (b ← g on the first step);  p ← p − lr·(g + μ·b if nesterov else b).
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"invalid SGD settings: lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def step(self) -> None:
        for grp in self.param_groups:
            lr, mu, damp, wd = grp["lr"], grp["momentum"], grp["dampening"], grp["weight_decay"]
            for p in grp["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if wd:
                    g = g + wd * p.data
                if mu:
                    st = self.state.setdefault(id(p), {})
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = g.copy()
                    else:
                        buf *= mu
                        buf += (1 - damp) * g
                    g = g + mu * buf if grp["nesterov"] else buf
                p.data -= lr * g


class FlatBuffers:
    """One contiguous array each for a group's parameters, gradients and AdamW moments; every tensor is a view.

    Built once: each parameter's values are copied into `params` and `p.data` becomes its view (so in-place updates
    of the flat array are updates of the parameters); `p.grad_buffer` is its view of `grads`, which backward fills
    instead of allocating. The optimizer step is then a few vectorised passes over four arrays.
    """

    def __init__(self, params: list[Tensor]):
        dtype = params[0].data.dtype
        n = sum(p.data.size for p in params)
        self.params = np.empty(n, dtype=dtype)
        self.grads = np.zeros(n, dtype=dtype)
        self.exp_avg = np.zeros(n, dtype=dtype)
        self.exp_avg_sq = np.zeros(n, dtype=dtype)
        self.views: dict[int, tuple[Any, Any, Any, Any]] = {}  # id(p) -> (param, grad, exp_avg, exp_avg_sq) views
        off = 0
        for p in params:
            size, shape = p.data.size, p.data.shape
            pv, gv, mv, vv = (a[off:off + size].reshape(shape) for a in
                              (self.params, self.grads, self.exp_avg, self.exp_avg_sq))
            pv[...] = p.data
            p.data = pv
            if p.grad is not None:
                gv[...] = p.grad.data
                p.grad = Tensor(gv)
            p.grad_buffer = gv
            self.views[id(p)] = (pv, gv, mv, vv)
            off += size

    @staticmethod
    def supports(params: list[Tensor]) -> bool:
        """True when the params can share flat NumPy buffers: Parameters, one float dtype, on the CPU."""
        return (bool(params) and all(isinstance(p, Parameter) and isinstance(p.data, np.ndarray) for p in params)
                and len({p.data.dtype for p in params}) == 1 and params[0].data.dtype.kind == "f")

    def in_use(self, params: list[Tensor]) -> bool:
        """True when every parameter still lives in the buffer and backward wrote every gradient into it."""
        for p in params:
            pv, gv, _, _ = self.views[id(p)]
            if p.data is not pv or p.grad is None or p.grad.data is not gv:
                return False
        return True


class AdamW(Optimizer):
    """Adam with decoupled weight decay, exactly torch.optim.AdamW (amsgrad=False, maximize=False).

    p ← p·(1 − lr·λ);  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
    p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε).

    `flat=True` (NumPy parameters only) moves each group's parameters, gradients and moments into one contiguous
    buffer each (`FlatBuffers`), and a step is the cache-blocked, threaded kernel over them
    (kernels/adamw.py: bit-identical to the per-tensor path). The parameters' `.data` become views into the buffer,
    and backward writes gradients into it: a gradient tensor kept across `zero_grad()` is overwritten by the next
    backward, as with torch's `zero_grad(set_to_none=False)`. A step where some parameter has no gradient, or
    where a parameter was given a new array, falls back to the per-tensor path, with torch's semantics.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, flat: bool = True):
        if not lr >= 0:
            raise ValueError(f"invalid learning rate lr={lr}; it must be >= 0")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid betas={betas}; each must be in [0, 1)")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"invalid eps={eps} or weight_decay={weight_decay}; both must be >= 0")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.flat = [FlatBuffers(g["params"]) if flat and FlatBuffers.supports(g["params"]) else None
                     for g in self.param_groups]
        self._views = {pid: v for fb in self.flat if fb is not None for pid, v in fb.views.items()}

    def _state(self, p: Tensor) -> dict[str, Any]:
        st = self.state.get(id(p))
        if st is None:
            views = self._views.get(id(p))
            if views is not None:  # the moments are views into the group's flat buffers
                views[2][...] = 0
                views[3][...] = 0
                st = self.state[id(p)] = {"step": 0, "exp_avg": views[2], "exp_avg_sq": views[3]}
            else:
                xp = get_array_module(p.data)
                st = self.state[id(p)] = {"step": 0, "exp_avg": xp.zeros_like(p.data),
                                          "exp_avg_sq": xp.zeros_like(p.data)}
        return st

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """As Optimizer.load_state_dict; the loaded moments are copied into the flat buffers where there are some."""
        super().load_state_dict(sd)
        for pid, st in self.state.items():
            views = self._views.get(pid)
            if views is not None:
                for key, view in (("exp_avg", views[2]), ("exp_avg_sq", views[3])):
                    if key in st:
                        view[...] = st[key]
                        st[key] = view

    def step(self) -> None:
        for grp, fb in zip(self.param_groups, self.flat):
            lr, (b1, b2), eps, wd = grp["lr"], grp["betas"], grp["eps"], grp["weight_decay"]
            params = grp["params"]
            if fb is not None and fb.in_use(params):
                states = [self._state(p) for p in params]
                if len({st["step"] for st in states}) == 1:  # one bias correction for the whole buffer
                    t = states[0]["step"] + 1
                    for st in states:
                        st["step"] = t
                    adamw_update_blocked(fb.params, fb.grads, fb.exp_avg, fb.exp_avg_sq, lr, b1, b2, eps, wd, t)
                    continue
            for p in params:
                if p.grad is None:
                    continue
                st = self._state(p)
                if "scratch" not in st:  # not saved in state_dict: rebuilt after a load
                    st["scratch"] = get_array_module(p.data).empty_like(p.data)
                st["step"] += 1
                adamw_update(p.data, p.grad.data, st["exp_avg"], st["exp_avg_sq"], st["scratch"], lr, b1, b2, eps,
                             wd, st["step"])


def clip_grad_norm(params: Iterable[Tensor], max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients by min(1, max_norm / (‖g‖ + 1e-6)) where ‖g‖ is their global L2 norm; return ‖g‖.

    Same formula as torch.nn.utils.clip_grad_norm_ (norm_type 2).
    """
    grads = [p.grad.data for p in params if p.grad is not None]
    if not grads:
        return 0.0
    xp = get_array_module(grads[0])
    # the squares summed on the device in float64 and read once (a float() per tensor syncs once per parameter)
    total = float(xp.sqrt(sum(xp.vdot(g.ravel(), g.ravel()).astype(np.float64) for g in grads)))
    coef = max_norm / (total + eps)
    if coef < 1.0:
        for g in grads:
            g *= g.dtype.type(coef)
    return total
