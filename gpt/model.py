"""The GPT-2 model of the book's chapter 4 (GELU, FeedForward, TransformerBlock, GPTModel) and its configs; Llama 3
and Qwen3 are configurations of the same classes (GPTConfig's norm, positions, mlp, n_kv_heads, head_dim, qk_norm
and bias fields; presets and Hugging Face names in gpt/families.py, RoPE in gpt/rope.py, RMSNorm in gpt/nn.py).

Written once against a backend `B` (DESIGN.md §4): the same classes run on tinytensor (numpy/cupy) and on torch.
Parameter names are the book's (`trf_blocks.0.att.W_query.weight`, `ff.layers.0.weight`, `norm1.scale`, ...).
Follows Raschka, *Build a Large Language Model (From Scratch)*, ch. 4, and GPT-2 (Radford et al. 2019).

Initialisation (GPT-2's, as nanoGPT reproduces it; all draws in NumPy from `np.random.default_rng(seed)` in
definition order, so one seed gives bit-identical weights on every backend):
- every Linear and Embedding weight ~ N(0, 0.02²);
- the residual projections `att.out_proj.weight` and `ff.layers.2.weight` ~ N(0, (0.02 / √(2·n_layers))²):
  each block adds two outputs to the residual stream, so scaling by 1/√(2·n_layers) keeps its variance from
  growing with depth (GPT-2 paper §2.3);
- every bias zero; LayerNorm scale 1 and shift 0.
`weight_init="torch"` instead gives what the book's PyTorch GPTModel gets from PyTorch's default layer init (the
torch.nn.Embedding and torch.nn.Linear docs): Embedding weights ~ N(0, 1); Linear weights and biases
~ U(−1/√fan_in, 1/√fan_in) (kaiming_uniform_ with a=√5); LayerNorm 1 and 0; drawn in NumPy as above. The book's
chapter 5 recipe (lr 4e-4, no warmup, 10 epochs on "The Verdict") depends on it: from GPT-2's N(0, 0.02)
embeddings the same recipe stalls near the unigram loss (train 5.8 after 10 epochs, measured), from N(0, 1) it
memorises the story as the book shows (train ~0.5).

Efficient attention (book ch. 3/4): MultiHeadAttention calls `B.F.scaled_dot_product_attention`, which on the torch
backend *is* torch.nn.functional's, so PyTorch picks its flash / memory-efficient kernels on GPUs.
Vocabulary padding (`pad_vocab_multiple`, nanoGPT's 50257 -> 50304): tok_emb/out_head get zero rows up to the
multiple; forward slices the logits back to vocab_size and state_dict() stores only the true rows, so
checkpoints and Hugging Face exports keep vocab_size and load into padded or unpadded models alike.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from backends.base import Backend
from .attention import MultiHeadAttention
from .kv_cache import KVCache
from .nn import (Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, RMSNorm, Sequential, as_rng,
                 to_numpy_any)
from .rope import RoPE

GPT_CONFIG_124M = {
    "vocab_size": 50257,     # GPT-2's BPE vocabulary
    "context_length": 1024,  # longest input, in tokens
    "emb_dim": 768,
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,
    "qkv_bias": False,
}
GPT_CONFIG_355M = {**GPT_CONFIG_124M, "emb_dim": 1024, "n_layers": 24, "n_heads": 16}
GPT_CONFIG_774M = {**GPT_CONFIG_124M, "emb_dim": 1280, "n_layers": 36, "n_heads": 20}
GPT_CONFIG_1558M = {**GPT_CONFIG_124M, "emb_dim": 1600, "n_layers": 48, "n_heads": 25}
GPT_CONFIGS = {"124M": GPT_CONFIG_124M, "355M": GPT_CONFIG_355M, "774M": GPT_CONFIG_774M,
               "1558M": GPT_CONFIG_1558M}


@dataclass
class GPTConfig:
    """The book's config dict as a dataclass (same keys), plus weight tying."""

    vocab_size: int = 50257     # number of token ids
    context_length: int = 1024  # maximum sequence length (rows of pos_emb)
    emb_dim: int = 768          # width of the residual stream
    n_heads: int = 12           # attention heads per layer (must divide emb_dim)
    n_layers: int = 12          # transformer blocks
    drop_rate: float = 0.1      # dropout on embeddings, attention weights and residual branches
    qkv_bias: bool = False      # biases on the query/key/value projections (True for OpenAI's weights)
    tie_weights: bool = False   # out_head shares tok_emb.weight (as GPT-2 does); then no out_head.weight key
    flash_attention: bool = False  # numpy/cupy: tiled FlashAttention kernel (O(T) memory); torch's sdpa chooses itself
    pad_vocab_multiple: int = 1  # embedding/head rows rounded up to this multiple (64: faster GPU matmuls, nanoGPT)
    weight_init: str = "gpt2"   # "gpt2": N(0, 0.02) + scaled residual projections; "torch": PyTorch's defaults (book)
    # What Llama 3 and Qwen3 change (gpt/families.py has their presets); the defaults are the book's GPT-2.
    arch: str = "gpt2"          # family label ("gpt2" | "llama" | "qwen3"): the HF model_type an export writes
    norm: str = "layernorm"     # the blocks' and the final norm: "layernorm" (GPT-2) or "rmsnorm" (Llama, Qwen3)
    norm_eps: float = 1e-5      # the norms' epsilon (GPT-2 1e-5; HF configs' rms_norm_eps)
    positions: str = "learned"  # "learned" (pos_emb table, GPT-2) or "rope" (rotary, gpt/rope.py)
    rope_theta: float = 10000.0  # RoPE base (Llama 3: 500000, Qwen3: 1000000)
    rope_scaling: dict | None = None  # Llama 3's {"factor", "low_freq_factor", "high_freq_factor", ...} or None
    mlp: str = "gelu"           # "gelu": Linear-GELU-Linear (GPT-2); "swiglu": fc3(silu(fc1 x) · fc2 x) (Llama)
    hidden_dim: int | None = None  # MLP width (None: 4 · emb_dim, GPT-2's)
    n_kv_heads: int | None = None  # key/value heads for grouped-query attention (None: n_heads, plain MHA)
    head_dim: int | None = None   # width of one head (None: emb_dim // n_heads; Qwen3 sets it apart)
    qk_norm: bool = False       # RMSNorm on each head's queries and keys before RoPE (Qwen3)
    out_bias: bool = True       # bias on the attention's out_proj (GPT-2 yes; Llama/Qwen3 no)
    mlp_bias: bool = True       # biases on the MLP's Linears (GPT-2 yes; Llama/Qwen3 no)

    @property
    def padded_vocab_size(self) -> int:
        """Rows of tok_emb/out_head: vocab_size rounded up to pad_vocab_multiple (the extra ids are never used)."""
        m = int(self.pad_vocab_multiple)
        return -(-int(self.vocab_size) // m) * m

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_heads, or n_heads when unset."""
        return int(self.n_kv_heads or self.n_heads)

    @property
    def dim_per_head(self) -> int:
        """Width of one attention head: head_dim, or emb_dim // n_heads when unset."""
        return int(self.head_dim or self.emb_dim // self.n_heads)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GPTConfig":
        """A config from the book's dict keys; an unknown key is an error naming the known ones."""
        if not isinstance(d, dict):
            raise ValueError(f"a model config must be a mapping of the book's keys, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "pad_vocab_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"config {name}={value!r} must be a positive integer")
        for name in ("qkv_bias", "tie_weights", "flash_attention"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"config {name}={getattr(self, name)!r} must be true or false")
        if isinstance(self.drop_rate, bool) or not isinstance(self.drop_rate, (int, float)):
            raise ValueError(f"config drop_rate={self.drop_rate!r} must be a number in [0, 1)")
        if self.head_dim is None and self.emb_dim % self.n_heads:
            raise ValueError(f"emb_dim={self.emb_dim} must be divisible by n_heads={self.n_heads} (or set head_dim)")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        for name, allowed in (("norm", NORMS), ("positions", POSITIONS), ("mlp", MLPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"config {name}={getattr(self, name)!r} is not one of {allowed}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate={self.drop_rate} must lie in [0, 1)")
        if self.weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init={self.weight_init!r} is not one of {WEIGHT_INITS}: 'gpt2' (GPT-2's "
                             f"N(0, 0.02)) or 'torch' (PyTorch's layer defaults, as the book's model has)")


def as_config(cfg: dict[str, Any] | GPTConfig) -> GPTConfig:
    """A GPTConfig from a GPTConfig or the book's dict."""
    return cfg if isinstance(cfg, GPTConfig) else GPTConfig.from_dict(cfg)


class GELU(Module):
    """The book's GELU, tanh-approximated: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (Hendrycks & Gimpel)."""

    def __init__(self, B: Backend):
        self.B = B

    def forward(self, x: Any) -> Any:
        return self.B.F.gelu(x, approximate="tanh")


class FeedForward(Module):
    """Position-wise MLP emb_dim -> 4·emb_dim -> emb_dim with GELU; keys `layers.0.*` and `layers.2.*`."""

    def __init__(self, B: Backend, cfg: dict[str, Any] | GPTConfig, rng: np.random.Generator | None = None,
                 proj_std: float = 0.02):
        cfg, rng = as_config(cfg), as_rng(rng)
        self.B = B
        hidden, bias = cfg.hidden_dim or 4 * cfg.emb_dim, cfg.mlp_bias
        self.layers = Sequential(Linear(B, cfg.emb_dim, hidden, bias=bias, rng=rng), GELU(B),
                                 Linear(B, hidden, cfg.emb_dim, bias=bias, rng=rng, std=proj_std))

    def forward(self, x: Any) -> Any:
        return self.layers(x)


class SwiGLUFeedForward(Module):
    """The gated MLP of Llama and Qwen3: fc3(silu(fc1(x)) · fc2(x)) (Shazeer 2020, "GLU Variants", eq. 6);
    fc1 is the gate, fc2 the up and fc3 the down projection (the book's bonus Llama code's names)."""

    def __init__(self, B: Backend, cfg: dict[str, Any] | GPTConfig, rng: np.random.Generator | None = None,
                 proj_std: float = 0.02):
        cfg, rng = as_config(cfg), as_rng(rng)
        self.B = B
        hidden, bias = cfg.hidden_dim or 4 * cfg.emb_dim, cfg.mlp_bias
        self.fc1 = Linear(B, cfg.emb_dim, hidden, bias=bias, rng=rng)
        self.fc2 = Linear(B, cfg.emb_dim, hidden, bias=bias, rng=rng)
        self.fc3 = Linear(B, hidden, cfg.emb_dim, bias=bias, rng=rng, std=proj_std)

    def forward(self, x: Any) -> Any:
        return self.fc3(self.B.F.silu(self.fc1(x)) * self.fc2(x))


def make_norm(B: Backend, cfg: GPTConfig, dim: int) -> Module:
    """The config's norm over `dim` features: the book's LayerNorm or RMSNorm."""
    return (RMSNorm if cfg.norm == "rmsnorm" else LayerNorm)(B, dim, eps=cfg.norm_eps)


class TransformerBlock(Module):
    """A pre-norm block: x + drop(att(norm1(x))), then x + drop(ff(norm2(x))) (book §4.5).

    The config picks the parts: LayerNorm or RMSNorm, GELU or SwiGLU MLP, heads / key-value heads / head_dim,
    QK-norm, biases; `rope` (a gpt.rope.RoPE shared by every block) replaces learned positions.
    """

    def __init__(self, B: Backend, cfg: dict[str, Any] | GPTConfig, rng: np.random.Generator | None = None,
                 rope: Any = None):
        cfg, rng = as_config(cfg), as_rng(rng)
        proj_std = 0.02 / math.sqrt(2 * cfg.n_layers)  # GPT-2 §2.3: residual projections scaled by 1/√(2·L)
        self.B = B
        self.att = MultiHeadAttention(B, cfg.emb_dim, cfg.emb_dim, cfg.context_length, cfg.drop_rate, cfg.n_heads,
                                      qkv_bias=cfg.qkv_bias, rng=rng, proj_std=proj_std, flash=cfg.flash_attention,
                                      num_kv_heads=cfg.kv_heads, head_dim=cfg.head_dim, out_bias=cfg.out_bias,
                                      rope=rope, qk_norm=cfg.qk_norm, norm_eps=cfg.norm_eps)
        self.ff = (SwiGLUFeedForward if cfg.mlp == "swiglu" else FeedForward)(B, cfg, rng=rng, proj_std=proj_std)
        self.norm1 = make_norm(B, cfg, cfg.emb_dim)
        self.norm2 = make_norm(B, cfg, cfg.emb_dim)
        self.drop_shortcut = Dropout(B, cfg.drop_rate)

    def forward(self, x: Any, cache: Any = None) -> Any:
        x = x + self.drop_shortcut(self.att(self.norm1(x), cache=cache))  # (b, t, emb_dim)
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPTModel(Module):
    """GPT-2: token + position embeddings, n_layers TransformerBlocks, a final LayerNorm and the vocabulary head.
    With `positions="rope"` there is no pos_emb (queries and keys are rotated instead) and `norm` picks the norms.

    `backend`: a Backend or its name ("numpy", "torch", "cupy"; float32); None means numpy float32.
    """

    def __init__(self, cfg: dict[str, Any] | GPTConfig, backend: Backend | str | None = None, seed: int | None = 123):
        import backends  # gpt -> backends is the allowed import direction (DESIGN.md §2)

        self.cfg = cfg = as_config(cfg)
        self.B = B = backends.get_backend(backend or "numpy")
        rng = np.random.default_rng(seed)
        self.tok_emb = Embedding(B, cfg.vocab_size, cfg.emb_dim, rng=rng)
        rope = None
        if cfg.positions == "learned":
            self.pos_emb = Embedding(B, cfg.context_length, cfg.emb_dim, rng=rng)
        else:
            rope = RoPE(B, cfg.dim_per_head, cfg.context_length, cfg.rope_theta, cfg.rope_scaling)
        self.drop_emb = Dropout(B, cfg.drop_rate)
        self.trf_blocks = ModuleList([TransformerBlock(B, cfg, rng=rng, rope=rope) for _ in range(cfg.n_layers)])
        self.final_norm = make_norm(B, cfg, cfg.emb_dim)
        self.out_head = Linear(B, cfg.emb_dim, cfg.vocab_size, bias=False, rng=rng,
                               weight=self.tok_emb.weight if cfg.tie_weights else None)
        if cfg.weight_init == "torch":
            torch_default_init(self, np.random.default_rng([seed if seed is not None else rng.integers(2**32), 1]))
        if cfg.padded_vocab_size > cfg.vocab_size:
            # padding rows are zeros appended after the seeded draws, so the true rows (and every later layer)
            # are bit-identical to the unpadded model's; logits are sliced back to vocab_size in forward, so the
            # padding ids are never predicted, sampled, or counted in the loss
            self.tok_emb.weight = _pad_rows(B, self.tok_emb.weight, cfg.padded_vocab_size)
            self.tok_emb.num_embeddings = cfg.padded_vocab_size
            self.out_head.weight = (self.tok_emb.weight if cfg.tie_weights
                                    else _pad_rows(B, self.out_head.weight, cfg.padded_vocab_size))
            self.out_head.out_features = cfg.padded_vocab_size

    def _check_ids(self, idx: Any) -> Any:
        """idx as a (batch, seq) integer array, or a ValueError/TypeError naming what is wrong. Ids already on a
        GPU stay there unchecked for range: reading them back would be a device-to-host sync on every forward."""
        on_device = hasattr(idx, "shape") and not str(getattr(idx, "device", "cpu")).startswith("cpu")
        ids = idx if on_device else to_numpy_any(idx) if hasattr(idx, "shape") else np.asarray(idx)
        if "int" not in str(ids.dtype):   # int64, uint16, torch.int64, ...
            raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"token ids must have shape (batch, seq) with seq >= 1, got {tuple(ids.shape)}; "
                             f"add a batch dimension with ids[None]")
        if not on_device and ids.size and (ids.min() < 0 or ids.max() >= self.cfg.vocab_size):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise ValueError(f"token id {bad} is out of range for vocab_size={self.cfg.vocab_size} "
                             f"(ids must lie in [0, {self.cfg.vocab_size}))")
        return ids

    def forward(self, idx: Any, cache: KVCache | None = None) -> Any:
        """idx (batch, seq) token ids -> logits (batch, seq, vocab_size); with a cache, seq new tokens after pos."""
        ids = self._check_ids(idx)
        b, seq_len = ids.shape
        start = 0
        if cache is not None:
            cache.check_room(b, seq_len)
            start = cache.pos
        if start + seq_len > self.cfg.context_length:
            raise ValueError(f"sequence of {start + seq_len} tokens is longer than context_length="
                             f"{self.cfg.context_length}; crop it to the last {self.cfg.context_length} tokens")
        x = self.tok_emb(self.B.tensor(ids))                                        # (b, t, emb_dim)
        if self.cfg.positions == "learned":   # RoPE instead rotates q and k inside attention
            positions = np.arange(start, start + seq_len) if cache is None else cache.positions(seq_len)
            x = x + self.pos_emb(self.B.tensor(positions))  # + (t, emb_dim), or (b, t, emb_dim) per-row positions
        x = self.drop_emb(x)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, cache=None if cache is None else cache.layers[i])
        if cache is not None:
            cache.advance(seq_len)
        logits = self.out_head(self.final_norm(x))  # (b, t, padded_vocab_size)
        if self.cfg.padded_vocab_size > self.cfg.vocab_size:
            logits = logits[:, :, :self.cfg.vocab_size]  # (b, t, vocab_size): padding ids never leave the model
        return logits

    def state_dict(self) -> dict[str, Any]:
        """The parameters by name; with vocabulary padding, tok_emb/out_head keep only the vocab_size true rows."""
        sd = super().state_dict()
        if self.cfg.padded_vocab_size > self.cfg.vocab_size:
            for key in _VOCAB_KEYS:
                if key in sd:
                    sd[key] = sd[key][:self.cfg.vocab_size]
        return sd

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Load by name; vocab_size-row embeddings/heads are zero-padded to this model's padded vocabulary."""
        V, P = self.cfg.vocab_size, self.cfg.padded_vocab_size
        if P > V:
            state_dict = dict(state_dict)
            for key in _VOCAB_KEYS:
                if key in state_dict and tuple(state_dict[key].shape)[0] == V:
                    rows = to_numpy_any(state_dict[key])
                    state_dict[key] = np.concatenate([rows, np.zeros((P - V,) + rows.shape[1:], rows.dtype)])
        super().load_state_dict(state_dict, strict=strict)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_len` tokens (default: context_length)."""
        max_len = self.cfg.context_length if max_len is None else int(max_len)
        if max_len > self.cfg.context_length:
            raise ValueError(f"max_len={max_len} exceeds context_length={self.cfg.context_length}: positions past "
                             f"it have no position embedding")
        c = self.cfg
        return KVCache(self.B, c.n_layers, batch_size, c.kv_heads, max_len, c.dim_per_head)

    def memory_estimate(self, batch_size: int, seq_len: int, dtype_bytes: int = 4) -> dict[str, int]:
        """Rough training memory in bytes: parameters, gradients, AdamW's two moments, saved activations.

        Activations per block (elements saved for backward, roughly): ~16·b·t·d for the projections, LayerNorms,
        GELU and residuals, plus 2·b·nh·t² for the attention probabilities; then the logits and their gradient.
        """
        c, n = self.cfg, self.num_parameters()
        per_block = 16 * batch_size * seq_len * c.emb_dim + 2 * batch_size * c.n_heads * seq_len * seq_len
        acts = c.n_layers * per_block + 2 * batch_size * seq_len * c.vocab_size
        est = {"params": n * dtype_bytes, "grads": n * dtype_bytes, "adam_state": 2 * n * dtype_bytes,
               "activations": acts * dtype_bytes}
        est["total"] = sum(est.values())
        return est


WEIGHT_INITS = ("gpt2", "torch")
NORMS, POSITIONS, MLPS = ("layernorm", "rmsnorm"), ("learned", "rope"), ("gelu", "swiglu")


def torch_default_init(model: Module, rng: np.random.Generator) -> None:
    """Redraw every parameter as PyTorch's default layer init would (the book's model): Embedding ~ N(0, 1),
    Linear weight and bias ~ U(−1/√fan_in, 1/√fan_in), LayerNorm scale 1 and shift 0; in definition order."""
    values: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    for name, owner, p in model._walk():
        if id(p) in seen:  # a tied weight is drawn once, by its first owner (the embedding)
            continue
        seen.add(id(p))
        shape = tuple(p.shape)
        if isinstance(owner, Embedding):
            values[name] = rng.standard_normal(shape)
        elif isinstance(owner, Linear):
            bound = 1.0 / math.sqrt(owner.in_features)  # kaiming_uniform_(a=√5) reduces to this bound
            values[name] = rng.uniform(-bound, bound, size=shape)
    Module.load_state_dict(model, values, strict=False)  # LayerNorm keeps its 1 and 0


_VOCAB_KEYS = ("tok_emb.weight", "out_head.weight")   # the tensors with one row per vocabulary id


def _pad_rows(B: Backend, param: Any, rows: int) -> Any:
    """A new parameter holding `param`'s rows followed by zero rows up to `rows` (vocabulary padding)."""
    arr = to_numpy_any(param)
    return B.parameter(np.concatenate([arr, np.zeros((rows - arr.shape[0],) + arr.shape[1:], arr.dtype)]))


__all__ = ["GPT_CONFIG_124M", "GPT_CONFIG_355M", "GPT_CONFIG_774M", "GPT_CONFIG_1558M", "GPT_CONFIGS", "GPTConfig",
           "GELU", "FeedForward", "SwiGLUFeedForward", "TransformerBlock", "make_norm", "GPTModel", "LayerNorm",
           "as_config", "WEIGHT_INITS", "torch_default_init"]
