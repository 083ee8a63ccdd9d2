"""Optimizers and clipping against torch.optim in float64: AdamW, SGD, clip_grad_norm, state_dict round trip."""
import numpy as np
import pytest
import torch

import tinytensor as tt
from tinytensor.optim import SGD, AdamW, clip_grad_norm

SHAPES = [(4, 3), (7,), (2, 3, 5)]


def _pairs(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [tt.Parameter(a.copy()) for a in arrays]
    ref = [torch.nn.Parameter(torch.tensor(a.copy())) for a in arrays]
    return rng, ours, ref


def _set_grads(rng, ours, ref, scale=1.0):
    for p, q in zip(ours, ref):
        g = rng.standard_normal(p.shape) * scale
        p.grad = tt.tensor(g.astype(p.dtype))
        q.grad = torch.tensor(g.astype(p.dtype))


def _max_rel(ours, ref):
    return max(np.abs(p.numpy() - q.detach().numpy()).max() / np.abs(q.detach().numpy()).max()
               for p, q in zip(ours, ref))


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adamw_ten_steps_match_torch_float64(wd):
    rng, ours, ref = _pairs()
    opt = AdamW(ours, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=wd)
    topt = torch.optim.AdamW(ref, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=wd)
    for _ in range(10):
        _set_grads(rng, ours, ref)
        opt.step()
        topt.step()
    assert _max_rel(ours, ref) <= 1e-12


def test_adamw_param_groups_and_lr_change_match_torch():
    rng, ours, ref = _pairs(1)
    opt = AdamW([{"params": ours[:2]}, {"params": ours[2:], "weight_decay": 0.0}], lr=3e-3, weight_decay=0.2)
    topt = torch.optim.AdamW([{"params": ref[:2]}, {"params": ref[2:], "weight_decay": 0.0}], lr=3e-3,
                             weight_decay=0.2)
    for step in range(6):
        for g, tg in zip(opt.param_groups, topt.param_groups):
            g["lr"] = tg["lr"] = 3e-3 * (step + 1) / 6
        _set_grads(rng, ours, ref)
        opt.step()
        topt.step()
    assert _max_rel(ours, ref) <= 1e-12


def test_adamw_float32_stays_float32_and_matches():
    rng, ours, ref = _pairs(2, np.float32)
    opt, topt = AdamW(ours, lr=1e-3), torch.optim.AdamW(ref, lr=1e-3)
    for _ in range(5):
        _set_grads(rng, ours, ref)
        opt.step()
        topt.step()
    assert all(p.dtype == np.float32 for p in ours)
    assert all(opt.state[id(p)]["exp_avg"].dtype == np.float32 for p in ours)
    assert _max_rel(ours, ref) <= 1e-5


def test_adamw_skips_params_without_grad():
    rng, ours, ref = _pairs(3)
    before = ours[1].numpy().copy()
    opt = AdamW(ours, lr=1e-2)
    _set_grads(rng, ours, ref)
    ours[1].grad = None
    opt.step()
    assert np.array_equal(ours[1].numpy(), before)
    assert id(ours[1]) not in opt.state


def test_adamw_state_dict_round_trip_resumes_identically():
    rng, ours, ref = _pairs(4)
    opt = AdamW(ours, lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        _set_grads(rng, ours, ref)
        opt.step()
    sd = opt.state_dict()
    clone = [tt.Parameter(p.numpy().copy()) for p in ours]
    opt2 = AdamW(clone, lr=5.0)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 1e-2
    for _ in range(2):
        g = [rng.standard_normal(p.shape) for p in ours]
        for p, q, gi in zip(ours, clone, g):
            p.grad, q.grad = tt.tensor(gi), tt.tensor(gi.copy())
        opt.step()
        opt2.step()
    for p, q in zip(ours, clone):
        assert np.array_equal(p.numpy(), q.numpy())


def test_adamw_load_state_dict_rejects_wrong_shapes():
    _, ours, _ = _pairs(5)
    opt = AdamW(ours, lr=1e-2)
    sd = opt.state_dict()
    sd["state"] = {0: {"step": 1, "exp_avg": np.zeros((9, 9)), "exp_avg_sq": np.zeros((9, 9))}}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(sd)


def test_optimizer_argument_errors():
    _, ours, _ = _pairs()
    with pytest.raises(ValueError, match="empty"):
        AdamW([], lr=1e-3)
    with pytest.raises(ValueError, match="betas"):
        AdamW(ours, betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="learning rate"):
        AdamW(ours, lr=-1.0)
    with pytest.raises(TypeError, match="Tensors"):
        AdamW([np.zeros(3)])


@pytest.mark.parametrize("kw", [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                dict(momentum=0.8, dampening=0.1, weight_decay=0.01)])
def test_sgd_matches_torch(kw):
    rng, ours, ref = _pairs(6)
    opt, topt = SGD(ours, lr=0.1, **kw), torch.optim.SGD(ref, lr=0.1, **kw)
    for _ in range(5):
        _set_grads(rng, ours, ref)
        opt.step()
        topt.step()
    assert _max_rel(ours, ref) <= 1e-12


@pytest.mark.parametrize("max_norm,scale", [(1.0, 1.0), (1e3, 1.0), (0.5, 10.0)])
def test_clip_grad_norm_matches_torch(max_norm, scale):
    rng, ours, ref = _pairs(7)
    _set_grads(rng, ours, ref, scale)
    n = clip_grad_norm(ours, max_norm)
    tn = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    assert abs(n - tn.item()) <= 1e-12 * tn.item()
    for p, q in zip(ours, ref):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12, atol=0)


def test_zero_grad():
    rng, ours, ref = _pairs()
    _set_grads(rng, ours, ref)
    opt = AdamW(ours)
    opt.zero_grad(set_to_none=False)
    assert all(not p.grad.numpy().any() for p in ours)
    opt.zero_grad()
    assert all(p.grad is None for p in ours)
