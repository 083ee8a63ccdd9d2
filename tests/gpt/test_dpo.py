"""DPO (gpt/dpo.py): eq. 7's loss, rewards and policy gradients on numpy against an independent torch float64
computation of the formula; the frozen reference gets no gradient; prompt and padding log-probs are masked out;
the preference data, its book split and the collate."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from conftest import require_data

import backends
from gpt.dpo import (PreferenceDataset, batch_logprobs, compute_dpo_loss, compute_dpo_loss_batch, compute_logprobs,
                     dpo_collate_fn, dpo_metrics, load_preference_data, log_sigmoid, make_reference_model)
from gpt.instruct import RESPONSE_HEADER, format_input, split_instruction_data
from gpt.model import GPTModel
from gpt.nn import to_numpy_any

CFG = {"vocab_size": 61, "context_length": 12, "emb_dim": 16, "n_heads": 2, "n_layers": 2, "drop_rate": 0.0,
       "qkv_bias": True}
PAD = 60
BETA = 0.3


def torch_eq7(pc, pr, rc, rr, beta):
    """Rafailov et al. eq. 7 written directly in torch: −mean log σ(β(π_c − ref_c) − β(π_r − ref_r))."""
    return -TF.logsigmoid(beta * (pc - rc) - beta * (pr - rr)).mean()


def torch_logprobs(logits, ids, mask):
    """The book's compute_logprobs in plain torch: log_softmax, gather the next token, mean over the mask."""
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, torch.tensor(ids[:, 1:])[..., None])[..., 0]
    m = torch.tensor(mask[:, 1:], dtype=logits.dtype)
    return (logp * m).sum(-1) / m.sum(-1)


def rel(a, b):
    a, b = np.asarray(to_numpy_any(a), dtype=np.float64), np.asarray(to_numpy_any(b), dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def test_loss_rewards_and_gradients_match_eq7_in_torch():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(-2.0, 1.0, size=7) for _ in range(4)]
    B = backends.get_backend("numpy", "float64")
    ours = [B.tensor(a, requires_grad=i < 2) for i, a in enumerate(arrays)]
    ref = [torch.tensor(a, requires_grad=i < 2) for i, a in enumerate(arrays)]
    loss, chosen, rejected = compute_dpo_loss(*ours, beta=BETA)
    loss_t = torch_eq7(*ref, BETA)
    assert rel(loss, loss_t.detach()) <= 1e-12
    assert rel(chosen, (ref[0] - ref[2]).mean().detach()) <= 1e-12
    assert rel(rejected, (ref[1] - ref[3]).mean().detach()) <= 1e-12
    assert not chosen.requires_grad and not rejected.requires_grad    # the rewards are detached
    upstream = float(rng.normal())                                     # a random upstream gradient
    loss.backward(np.asarray(upstream))
    (loss_t * upstream).backward()
    for o, t in zip(ours[:2], ref[:2]):
        assert rel(o.grad, t.grad) <= 1e-12
    assert ours[2].grad is None and ours[3].grad is None


def test_dpo_loss_on_torch_tensors_is_eq7_and_stable_at_extremes():
    z = torch.tensor([-800.0, -40.0, -1e-8, 0.0, 3.0, 40.0, 800.0], dtype=torch.float64, requires_grad=True)
    ours = log_sigmoid(z)
    ref = TF.logsigmoid(z.detach().clone().requires_grad_())
    np.testing.assert_allclose(ours.detach().numpy(), ref.detach().numpy(), rtol=1e-14)
    pc = torch.tensor([1.0, 2.0], dtype=torch.float64)
    loss, _, _ = compute_dpo_loss(pc, pc * 0, pc * 0, pc * 0, beta=0.1)
    assert abs(loss.item() - torch_eq7(pc, pc * 0, pc * 0, pc * 0, 0.1).item()) <= 1e-15


def batch_of_pairs():
    """A hand-made collated batch: 3 pairs, prompts of 3-4 tokens, right padding."""
    rng = np.random.default_rng(5)
    chosen, rejected = rng.integers(0, PAD, (3, 11)), rng.integers(0, PAD, (3, 11))
    cm, rm = np.ones((3, 11), bool), np.ones((3, 11), bool)
    for i, (prompt, n_c, n_r) in enumerate([(3, 11, 9), (4, 7, 10), (3, 8, 8)]):
        chosen[i, n_c:], rejected[i, n_r:] = PAD, PAD
        cm[i, n_c:], rm[i, n_r:] = False, False
        cm[i, :prompt], rm[i, :prompt] = False, False
        rejected[i, :prompt] = chosen[i, :prompt]
    return {"chosen": chosen, "rejected": rejected, "chosen_mask": cm, "rejected_mask": rm}


def perturb(model, seed=9, scale=0.02):
    """Move the policy away from the reference, so the rewards are not all zero."""
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        model.B.assign(p, to_numpy_any(p) + rng.normal(0.0, scale, size=p.shape))


def test_policy_gradients_numpy_match_torch_eq7_to_1e_8():
    batch = batch_of_pairs()
    policy = GPTModel(CFG, backend=backends.get_backend("numpy", "float64"), seed=3)
    reference = make_reference_model(policy)
    perturb(policy)
    upstream = 1.7
    loss, chosen, rejected = compute_dpo_loss_batch(batch, policy, reference, beta=BETA)
    loss.backward(np.asarray(upstream))
    # the same weights in torch, the loss written independently: log_softmax + gather, F.logsigmoid
    Bt = backends.get_backend("torch", "float64")
    policy_t, reference_t = GPTModel(CFG, backend=Bt, seed=0), GPTModel(CFG, backend=Bt, seed=0)
    policy_t.load_state_dict(policy.state_dict())
    reference_t.load_state_dict(reference.state_dict())
    lp = {f"{who}_{key}": torch_logprobs(m(torch.tensor(batch[key])), batch[key], batch[f"{key}_mask"])
          for who, m in (("pi", policy_t), ("ref", reference_t)) for key in ("chosen", "rejected")}
    loss_t = torch_eq7(lp["pi_chosen"], lp["pi_rejected"], lp["ref_chosen"].detach(), lp["ref_rejected"].detach(),
                       BETA)
    (loss_t * upstream).backward()
    assert rel(loss, loss_t.detach()) <= 1e-10
    assert rel(chosen, (lp["pi_chosen"] - lp["ref_chosen"]).mean().detach()) <= 1e-10
    assert rel(rejected, (lp["pi_rejected"] - lp["ref_rejected"]).mean().detach()) <= 1e-10
    assert abs(float(chosen.item())) > 1e-3 and abs(float(rejected.item())) > 1e-3
    grads_t = {n: p.grad.numpy() for n, p in policy_t.named_parameters()}
    floor = 1e-6 * max(np.abs(g).max() for g in grads_t.values())     # DESIGN §5: mathematically-zero gradients
    for n, p in policy.named_parameters():
        g, gt = to_numpy_any(p.grad), grads_t[n]
        err = np.abs(g - gt).max() / max(np.abs(gt).max(), floor)
        assert err <= 1e-8, f"{n}: rel error {err:.2e}"
    for _, p in reference.named_parameters():
        assert p.grad is None and not p.requires_grad


def test_torch_backend_gives_the_same_loss_as_numpy():
    batch = batch_of_pairs()
    losses = []
    for name in ("numpy", "torch"):
        policy = GPTModel(CFG, backend=backends.get_backend(name, "float64"), seed=3)
        reference = make_reference_model(policy)
        perturb(policy)
        losses.append([float(t.item()) for t in compute_dpo_loss_batch(batch, policy, reference, beta=BETA)])
        for p in reference.parameters():
            assert not p.requires_grad
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10)


def test_reference_model_is_a_frozen_independent_copy():
    policy = GPTModel(CFG, backend=backends.get_backend("numpy", "float64"), seed=3)
    start = {k: to_numpy_any(v).copy() for k, v in policy.state_dict().items()}
    reference = make_reference_model(policy)
    assert not reference.training and reference.B is policy.B
    perturb(policy)
    loss, _, _ = compute_dpo_loss_batch(batch_of_pairs(), policy, reference, beta=BETA)
    loss.backward()
    policy.B.AdamW(policy.parameters(), lr=1e-2).step()
    for k, v in reference.state_dict().items():
        np.testing.assert_array_equal(to_numpy_any(v), start[k])                    # the starting weights, untouched
    assert all(p.grad is None for p in reference.parameters())
    assert any(np.abs(to_numpy_any(policy.state_dict()[k]) - start[k]).max() > 0 for k in start)


def test_prompt_and_padding_log_probs_do_not_change_the_loss():
    rng = np.random.default_rng(2)
    B = backends.get_backend("numpy", "float64")
    batch = batch_of_pairs()
    ids, mask = batch["chosen"], batch["chosen_mask"]
    logits = rng.normal(size=ids.shape + (PAD + 1,))
    base = to_numpy_any(compute_logprobs(B.tensor(logits), ids, mask))
    changed = logits.copy()
    changed[0, 1] += rng.normal(size=PAD + 1) * 5    # position 1 predicts token 2: a prompt token (prompt is 3)
    changed[1, 8] += 7.0                             # position 8 predicts token 9 of row 1: padding
    np.testing.assert_array_equal(to_numpy_any(compute_logprobs(B.tensor(changed), ids, mask)), base)
    changed[0, 5, ids[0, 6]] += 1.0                  # a response token's log-prob: the value must move
    assert to_numpy_any(compute_logprobs(B.tensor(changed), ids, mask))[0] != base[0]


def test_compute_logprobs_matches_the_book_formula_with_gradients():
    rng = np.random.default_rng(4)
    batch = batch_of_pairs()
    ids, mask = batch["rejected"], batch["rejected_mask"]
    logits = rng.normal(size=ids.shape + (PAD + 1,))
    B = backends.get_backend("numpy", "float64")
    x, xt = B.tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
    out, out_t = compute_logprobs(x, ids, mask), torch_logprobs(xt, ids, mask)
    assert rel(out, out_t.detach()) <= 1e-12
    dout = rng.normal(size=out.shape)
    (out * B.tensor(dout)).sum().backward()
    (out_t * torch.tensor(dout)).sum().backward()
    assert rel(x.grad, xt.grad) <= 1e-12
    plain = compute_logprobs(B.tensor(logits), ids)                  # no mask: the mean over every position
    ref = torch.log_softmax(torch.tensor(logits[:, :-1]), -1).gather(-1, torch.tensor(ids[:, 1:])[..., None])
    assert rel(plain, ref[..., 0].mean(-1)) <= 1e-12


class CharTokenizer:
    """One id per character (ord mod 50): enough to check prompt lengths and padding."""

    def encode(self, text):
        return [ord(c) % 50 for c in text]


ENTRIES = [{"instruction": "Say hi", "input": "", "chosen": "Hello there.", "rejected": "No."},
           {"instruction": "Add", "input": "1 + 1", "chosen": "2", "rejected": "Figure it out yourself."}]


def test_preference_dataset_and_collate_mask_the_prompt_and_padding():
    ds = PreferenceDataset(ENTRIES, CharTokenizer())
    prompt_len = len(format_input(ENTRIES[0]) + RESPONSE_HEADER)
    assert ds[0]["prompt_length"] == prompt_len and len(ds[0]["chosen"]) == prompt_len + len("Hello there.")
    batch = dpo_collate_fn([ds[0], ds[1]], pad_token_id=PAD)
    longest = max(len(it[k]) for it in ds.items for k in ("chosen", "rejected"))
    assert batch["chosen"].shape == batch["rejected_mask"].shape == (2, longest + 1)
    assert batch["chosen"].dtype == np.int64 and batch["chosen_mask"].dtype == bool
    assert batch["chosen_mask"][0].sum() == len("Hello there.") and batch["rejected_mask"][0].sum() == len("No.")
    assert np.flatnonzero(batch["chosen_mask"][0])[0] == prompt_len
    assert (batch["rejected"][0, prompt_len + 3:] == PAD).all()
    unmasked = dpo_collate_fn([ds[0]], pad_token_id=PAD, mask_prompt_tokens=False)
    assert unmasked["chosen_mask"][0].sum() == len(ds[0]["chosen"])
    cut = dpo_collate_fn([ds[0], ds[1]], pad_token_id=PAD, allowed_max_length=prompt_len + 2)
    assert all(v.shape == (2, prompt_len + 2) for v in cut.values())


def test_dpo_metrics_report_margin_and_accuracy():
    policy = GPTModel(CFG, backend=backends.get_backend("numpy", "float64"), seed=3)
    reference = make_reference_model(policy)
    perturb(policy)
    batch = batch_of_pairs()
    with policy.B.no_grad():
        m = dpo_metrics([batch, batch], policy, reference, beta=BETA)
        pc, pr, rc, rr = (to_numpy_any(t) for t in batch_logprobs(batch, policy, reference))
    assert m["reward_margin"] == pytest.approx(m["chosen_reward"] - m["rejected_reward"], abs=1e-15)
    assert m["chosen_reward"] == pytest.approx(np.mean(pc - rc), abs=1e-14)
    assert m["reward_accuracy"] == pytest.approx(np.mean((pc - rc) > (pr - rr)), abs=0)
    assert np.isnan(dpo_metrics([], policy, reference)["loss"])


def test_load_preference_data_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="instruction-data-with-preference.json"):
        load_preference_data(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x", "chosen": "y"}]))
    with pytest.raises(ValueError, match=r"record 0 has no 'rejected'"):
        load_preference_data(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_preference_data(bad)


def test_the_books_preference_data_and_split():
    data = load_preference_data(require_data("instruction-data-with-preference.json"))
    train, test, val = split_instruction_data(data)
    assert (len(data), len(train), len(test), len(val)) == (1100, 935, 110, 55)
    assert {"instruction", "input", "chosen", "rejected"} <= set(train[0])
