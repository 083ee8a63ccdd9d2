"""Full-scale options on the CPU: token shards, vocabulary padding, MFU arithmetic, bf16/fp16 autocast, compile."""
import numpy as np
import pytest

import backends
from gpt.model import GPTModel
from gpt.training.trainer import TrainConfig, pretrainer

torch = pytest.importorskip("torch")

TINY = {"vocab_size": 100, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0,
        "qkv_bias": False}


def _ids(n=2000, vocab=100):
    return np.random.default_rng(3).integers(0, vocab, size=n)


def _trainer(B, **overrides):
    cfg = TrainConfig(max_steps=3, batch_size=4, grad_clip=1.0, warmup_steps=0, eval_iters=1, sample_tokens=0,
                      plot=False, **overrides)
    ids = _ids()
    return pretrainer(GPTModel(TINY, backend=B, seed=5), ids[:1800], ids[1800:], cfg)


# ---- prepare --------------------------------------------------------------------------------------------------------

def test_prepare_round_trips_text_through_shards_and_trains_from_them(tmp_path, capsys):
    from gpt.training import corpus
    from gpt.cli import main
    from gpt.training.shards import ShardDataset, read_meta, read_split
    from gpt.data import read_token_file

    text = corpus.default_corpus()[:60_000] + "\nnon-ASCII: é ü 漢字 🙂\n"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    rc = main(["prepare", "--data", str(tmp_path / "a.txt"), "--out", str(tmp_path / "sh"), "--tokenizer", "bytes",
               "--val-fraction", "0.2", "--shard-size", "7000", "--workers", "2"])
    assert rc == 0, capsys.readouterr().err
    meta = read_meta(tmp_path / "sh")
    n = len(text.encode("utf-8"))                       # the bytes tokenizer: one id per byte
    assert meta["train_tokens"] + meta["val_tokens"] == n
    assert meta["val_tokens"] == n - round(n * 0.8) and len(meta["train"]) == -(-meta["train_tokens"] // 7000)
    assert read_token_file(tmp_path / "sh" / meta["train"][0]).dtype == np.uint16
    ids = np.concatenate([read_split(tmp_path / "sh", "train"), read_split(tmp_path / "sh", "val")])
    assert corpus.bytes_tokenizer().decode(ids.tolist()) == text

    windows = ShardDataset(tmp_path / "sh", "train", 32)
    x, y = windows.get_batch(np.array([0, len(windows) - 1]))
    assert x.shape == (2, 32) and np.array_equal(x[:, 1:], y[:, :-1])

    rc = main(["train", "--data", str(tmp_path / "sh"), "--out", str(tmp_path / "run"), "--max-steps", "2",
               "--context-length", "32", "--emb-dim", "16", "--n-heads", "2", "--n-layers", "1", "--batch-size",
               "2", "--eval-interval", "2", "--eval-iters", "1", "--no-plot", "--pad-vocab", "64", "--tie-weights"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "MFU" not in out.out and "vocab 257" in out.out     # on a CPU MFU means nothing, so nothing is said


def test_prepare_rejects_bad_arguments(tmp_path):
    from gpt.training.shards import prepare

    with pytest.raises(FileNotFoundError, match="not found"):
        prepare([tmp_path / "missing.txt"], tmp_path / "o")
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ValueError, match="--val-fraction"):
        prepare([tmp_path / "a.txt"], tmp_path / "o", tokenizer="bytes", val_fraction=1.5)


# ---- vocabulary padding -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("tie", [False, True])
def test_padded_vocab_keeps_loss_and_tokens_and_never_samples_padding(tie):
    from gpt.generate import generate
    from gpt.pretrain import calc_loss_batch

    B = backends.get_backend("numpy", dtype="float64")
    plain = GPTModel({**TINY, "tie_weights": tie}, backend=B, seed=1)
    padded = GPTModel({**TINY, "tie_weights": tie, "pad_vocab_multiple": 64}, backend=B, seed=1)
    padded.load_state_dict(plain.state_dict())             # true rows copied; padding rows zero
    assert padded.out_head.weight.shape[0] == 128 and padded.cfg.padded_vocab_size == 128
    assert {k: v.shape for k, v in padded.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    x = _ids(2 * 17).reshape(2, 17)
    assert abs(float(calc_loss_batch(x[:, :-1], x[:, 1:], padded).item())
               - float(calc_loss_batch(x[:, :-1], x[:, 1:], plain).item())) <= 1e-12
    # make every padding id's logit enormous: if padding reached the sampler, it would be drawn every time
    big = B.to_numpy(padded.out_head.weight).copy()
    big[100:] = 50.0
    B.assign(padded.out_head.weight, big)
    if not tie:
        a = generate(plain, x[:, :4], 12, 16, temperature=1.0, seed=9)
        b = generate(padded, x[:, :4], 12, 16, temperature=1.0, seed=9)
        assert np.array_equal(a, b)
    out = generate(padded, x[:, :4], 12, 16, temperature=2.0, seed=9)
    assert out.max() < TINY["vocab_size"] and padded(x[:, :4]).shape == (2, 4, TINY["vocab_size"])


# ---- FLOPs and MFU --------------------------------------------------------------------------------------------------

def test_flops_formula_counts_the_matmul_parameters_and_the_peak_table():
    from gpt.training import flops
    from gpt.model import GPT_CONFIG_124M, GPTConfig

    for tie in (False, True):
        cfg = GPTConfig.from_dict({**TINY, "qkv_bias": True, "tie_weights": tie, "pad_vocab_multiple": 64})
        m = GPTModel(cfg, backend="numpy", seed=0)
        lookups = int(np.prod(m.pos_emb.weight.shape)) + (0 if tie else cfg.vocab_size * cfg.emb_dim)
        padding = (cfg.padded_vocab_size - cfg.vocab_size) * cfg.emb_dim * (1 if tie else 2)
        assert flops.matmul_params(cfg) == m.num_parameters() - lookups - padding
    g = GPTConfig.from_dict(GPT_CONFIG_124M)
    # nanoGPT's 124M: N = 124.4 M with the head, 6N + 12·12·12·64·1024 ≈ 0.84 GFLOP per token
    assert flops.flops_per_token(g) == pytest.approx(6 * flops.matmul_params(g) + 12 * 12 * 768 * 1024)
    assert flops.lookup_peak("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert flops.lookup_peak("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert flops.lookup_peak("Some GPU", "bf16") is None
    assert flops.mfu(1000.0, 1e9, 1e13, world_size=2) == pytest.approx(0.05)
    B = backends.get_backend("torch")
    assert flops.resolve_peak(B, "float32")[0] is None
    assert flops.resolve_peak(B, "float32", override=1e12)[0] == 1e12


# ---- mixed precision ----------------------------------------------------------------------------------------------

def test_bfloat16_autocast_step_is_within_tolerance_of_float32():
    B = backends.get_backend("torch")
    fp32, bf16 = _trainer(B), _trainer(B, autocast="bfloat16")
    losses32 = [fp32.train_step() for _ in range(2)]
    losses16 = [bf16.train_step() for _ in range(2)]
    # bfloat16 keeps 8 significant bits (~0.4% per rounding); the loss (~4.6) agrees to 1% relative
    assert np.allclose(losses16, losses32, rtol=1e-2), (losses16, losses32)
    assert bf16.model.tok_emb.weight.dtype == torch.float32          # master weights stay float32


def test_float16_autocast_uses_a_grad_scaler_on_cpu():
    B = backends.get_backend("torch")
    t = _trainer(B, autocast="float16")
    assert t.runner.scaler.is_enabled()
    before = B.to_numpy(t.model.out_head.weight).copy()
    losses = [t.train_step() for _ in range(2)]
    assert all(np.isfinite(losses)) and not np.array_equal(before, B.to_numpy(t.model.out_head.weight))
    with pytest.raises(ValueError, match="float16 autocast"):
        backends.get_backend("numpy").grad_scaler(True)


# ---- compile ------------------------------------------------------------------------------------------------------

def test_compile_fallback_is_announced(monkeypatch):
    import backends.torch_backend as tb

    monkeypatch.setattr(tb.shutil, "which", lambda name: None)
    t = _trainer(backends.get_backend("torch"), compile=True)
    assert any("torch.compile is unavailable" in n and "running eagerly" in n for n in t.notes)
    assert t.runner.net.model[0] is t.model                    # the eager B.module view
    numpy_note = backends.get_backend("numpy").compile(object())[1]
    assert "running eagerly" in numpy_note


def test_compiled_and_eager_losses_agree_over_three_steps():
    torch.manual_seed(0)
    B = backends.get_backend("torch")
    eager, compiled = _trainer(B), _trainer(B, compile=True)
    fallback = [n for n in compiled.notes if "torch.compile" in n]
    if fallback:   # no compiler here: the run must say so (and then trains eagerly)
        assert "running eagerly" in fallback[0]
    else:
        assert type(compiled.runner.net).__name__ == "OptimizedModule"
    a = [eager.train_step() for _ in range(3)]
    b = [compiled.train_step() for _ in range(3)]
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6), (a, b)
