"""BERT, the encoder side (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers"), built from
the same layers as the GPT (gpt/nn.py) and written once for every backend.

What differs from the book's GPT (ch. 4), following the paper and Hugging Face's BertForMaskedLM:
- embeddings: token + position + token-type (segment A/B) embeddings, summed, then LayerNorm and dropout;
- attention is bidirectional: no causal mask, only a key-padding mask from `attention_mask` (b, t) (1 = real token):
  a padding key gets probability 0 for every query, so the real positions never see what padding holds;
- post-LayerNorm blocks (Vaswani et al. 2017's order, which BERT keeps): x = LN(x + drop(att(x))),
  x = LN(x + drop(ff(x))), against GPT-2's pre-LN x + att(LN(x));
- the exact GELU x·Φ(x) (B.F.gelu's default "none"), not the tanh form;
- the masked-LM head: dense + GELU + LayerNorm, then a decoder tied to the word embeddings with its own bias;
- the pooler for classification: tanh(W·h_[CLS] + b) (the paper's §3, "C ∈ R^H").
`model(idx, attention_mask=mask)` returns the masked-LM logits (b, t, vocab) (DESIGN §3).

Parameter names follow the book's model where the part is the same (`tok_emb`, `pos_emb`, `trf_blocks.{i}.att.
W_query`, `ff.layers.0`, `norm1.scale`); `BERT_HF_NAME_MAP` is the one table to Hugging Face's BertForMaskedLM
names, and `load_hf_bert` reads such a directory (config.json with model_type "bert" + model.safetensors).
Initialisation is BERT's (its `initializer_range`): every Linear and Embedding weight ~ N(0, 0.02²), the padding
token's embedding row 0, biases 0, LayerNorm 1 and 0; drawn in NumPy from one seeded generator (same weights on
every backend).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from backends.base import Backend
from .nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, Sequential, to_numpy_any


@dataclass
class BertConfig:
    """BERT's hyper-parameters under the book's key names where there is one (Hugging Face's name in brackets)."""

    vocab_size: int = 30522        # WordPiece vocabulary of bert-base-uncased
    context_length: int = 512      # rows of pos_emb [max_position_embeddings]
    emb_dim: int = 768             # width of the residual stream [hidden_size]
    n_heads: int = 12              # attention heads [num_attention_heads]
    n_layers: int = 12             # encoder blocks [num_hidden_layers]
    hidden_dim: int = 3072         # feed-forward width, 4·emb_dim in BERT-base [intermediate_size]
    type_vocab_size: int = 2       # segment ids (sentence A / B) [type_vocab_size]
    drop_rate: float = 0.1         # dropout on embeddings and residual branches [hidden_dropout_prob]
    att_drop_rate: float = 0.1     # dropout on the attention weights [attention_probs_dropout_prob]
    layer_norm_eps: float = 1e-12  # BERT's LayerNorm epsilon (GPT-2 uses 1e-5)
    pad_token_id: int = 0          # its embedding row starts at 0 ([PAD] in BERT's vocab.txt)
    tie_weights: bool = True       # the MLM decoder shares tok_emb.weight [tie_word_embeddings]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BertConfig":
        """A config from its keys; an unknown key is an error naming the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown BERT config keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def qkv_bias(self) -> bool:
        """BERT's query/key/value projections always have biases (the FLOP count reads this, as for GPTConfig)."""
        return True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "hidden_dim",
                     "type_vocab_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"BERT config {name}={getattr(self, name)} must be a positive integer")
        if self.emb_dim % self.n_heads:
            raise ValueError(f"emb_dim={self.emb_dim} must be divisible by n_heads={self.n_heads}")
        for name in ("drop_rate", "att_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1)")


def as_bert_config(cfg: Mapping[str, Any] | BertConfig) -> BertConfig:
    """A BertConfig from a BertConfig or a dict of its keys."""
    return cfg if isinstance(cfg, BertConfig) else BertConfig.from_dict(cfg)


class ExactGELU(Module):
    """x·Φ(x) = ½·x·(1 + erf(x/√2)) (Hendrycks & Gimpel 2016), BERT's activation ("gelu" in its config)."""

    def __init__(self, B: Backend):
        self.B = B

    def forward(self, x: Any) -> Any:
        return self.B.F.gelu(x)


class BidirectionalAttention(Module):
    """Multi-head self-attention without the causal mask (BERT's BertSelfAttention + its output dense).

    The same projections as the book's MultiHeadAttention (§3.6.2), with biases; `mask` is a boolean key mask
    broadcastable to (b, nh, t, t) (True = may attend), or None when every position is a real token.
    """

    def __init__(self, B: Backend, d: int, num_heads: int, dropout: float, rng: np.random.Generator):
        self.B, self.d, self.num_heads, self.head_dim, self.dropout_p = B, d, num_heads, d // num_heads, dropout
        self.W_query = Linear(B, d, d, rng=rng)
        self.W_key = Linear(B, d, d, rng=rng)
        self.W_value = Linear(B, d, d, rng=rng)
        self.out_proj = Linear(B, d, d, rng=rng)

    def forward(self, x: Any, mask: Any = None) -> Any:
        b, t, _ = x.shape
        nh, hd = self.num_heads, self.head_dim
        q = self.W_query(x).reshape(b, t, nh, hd).transpose(1, 2)  # (b, nh, t, hd)
        k = self.W_key(x).reshape(b, t, nh, hd).transpose(1, 2)    # (b, nh, t, hd)
        v = self.W_value(x).reshape(b, t, nh, hd).transpose(1, 2)  # (b, nh, t, hd)
        p = self.dropout_p if self.training else 0.0
        ctx = self.B.F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=False)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, t, self.d))  # (b, t, d)


class BertBlock(Module):
    """A post-LayerNorm encoder block (BERT's order): x = norm1(x + drop(att(x))); x = norm2(x + drop(ff(x)))."""

    def __init__(self, B: Backend, cfg: BertConfig, rng: np.random.Generator):
        self.B = B
        self.att = BidirectionalAttention(B, cfg.emb_dim, cfg.n_heads, cfg.att_drop_rate, rng)
        self.norm1 = LayerNorm(B, cfg.emb_dim, eps=cfg.layer_norm_eps)
        self.ff = Sequential(Linear(B, cfg.emb_dim, cfg.hidden_dim, rng=rng), ExactGELU(B),
                             Linear(B, cfg.hidden_dim, cfg.emb_dim, rng=rng))
        self.norm2 = LayerNorm(B, cfg.emb_dim, eps=cfg.layer_norm_eps)
        self.drop_shortcut = Dropout(B, cfg.drop_rate)

    def forward(self, x: Any, mask: Any = None) -> Any:
        x = self.norm1(x + self.drop_shortcut(self.att(x, mask)))  # (b, t, d)
        return self.norm2(x + self.drop_shortcut(self.ff(x)))


class MaskedLMHead(Module):
    """BERT's prediction head: dense + GELU + LayerNorm, then logits = h·Eᵀ + bias with E the word embeddings."""

    def __init__(self, B: Backend, cfg: BertConfig, tok_emb: Embedding, rng: np.random.Generator):
        self.B = B
        self.dense = Linear(B, cfg.emb_dim, cfg.emb_dim, rng=rng)
        self.act = ExactGELU(B)
        self.norm = LayerNorm(B, cfg.emb_dim, eps=cfg.layer_norm_eps)
        self.decoder = Linear(B, cfg.emb_dim, cfg.vocab_size, bias=False, rng=rng,
                              weight=tok_emb.weight if cfg.tie_weights else None)
        self.bias = B.parameter(np.zeros(cfg.vocab_size))

    def forward(self, h: Any) -> Any:
        return self.B.F.linear(self.norm(self.act(self.dense(h))), self.decoder.weight, self.bias)  # (..., vocab)


class Pooler(Module):
    """tanh(W·h + b) of the first ([CLS]) position: the sequence summary BERT classifies from."""

    def __init__(self, B: Backend, d: int, rng: np.random.Generator):
        self.B = B
        self.dense = Linear(B, d, d, rng=rng)

    def forward(self, hidden: Any) -> Any:
        return self.dense(hidden[:, 0, :]).tanh()  # (b, d)


class BertModel(Module):
    """BERT for masked-language modelling, with a pooler for classification (BertForMaskedLM + bert.pooler).

    `backend`: a Backend or its name (None: numpy float32). `model(idx, attention_mask=, token_type_ids=)` gives
    masked-LM logits (b, t, vocab); `encode` the final hidden states (b, t, emb_dim); `pooled` the (b, emb_dim)
    [CLS] summary.
    """

    arch = "bert"

    def __init__(self, cfg: Mapping[str, Any] | BertConfig, backend: Backend | str | None = None, seed: int | None = 123):
        import backends  # gpt -> backends is the allowed import direction (DESIGN.md §2)

        self.cfg = cfg = as_bert_config(cfg)
        self.B = B = backends.get_backend(backend or "numpy")
        rng = np.random.default_rng(seed)
        self.tok_emb = Embedding(B, cfg.vocab_size, cfg.emb_dim, rng=rng)
        self.pos_emb = Embedding(B, cfg.context_length, cfg.emb_dim, rng=rng)
        self.type_emb = Embedding(B, cfg.type_vocab_size, cfg.emb_dim, rng=rng)
        if 0 <= cfg.pad_token_id < cfg.vocab_size:
            w = to_numpy_any(self.tok_emb.weight).copy()
            w[cfg.pad_token_id] = 0.0  # BERT's init: the padding id's row starts at 0
            B.assign(self.tok_emb.weight, w)
        self.emb_norm = LayerNorm(B, cfg.emb_dim, eps=cfg.layer_norm_eps)
        self.drop_emb = Dropout(B, cfg.drop_rate)
        self.trf_blocks = ModuleList([BertBlock(B, cfg, rng) for _ in range(cfg.n_layers)])
        self.pooler = Pooler(B, cfg.emb_dim, rng)
        self.mlm_head = MaskedLMHead(B, cfg, self.tok_emb, rng)

    def _check_ids(self, idx: Any, attention_mask: Any, token_type_ids: Any) -> tuple[np.ndarray, ...]:
        """(ids, mask, types) as NumPy arrays of shape (b, t), or a ValueError/TypeError naming what is wrong."""
        ids = np.asarray(to_numpy_any(idx))
        if ids.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"token ids must have shape (batch, seq) with seq >= 1, got {ids.shape}; add a batch "
                             f"dimension with ids[None]")
        if ids.shape[1] > self.cfg.context_length:
            raise ValueError(f"sequence of {ids.shape[1]} tokens is longer than context_length="
                             f"{self.cfg.context_length}; truncate it")
        if ids.size and (ids.min() < 0 or ids.max() >= self.cfg.vocab_size):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise ValueError(f"token id {bad} is out of range for vocab_size={self.cfg.vocab_size}")
        out = [ids]
        for name, a, hi in (("attention_mask", attention_mask, 2), ("token_type_ids", token_type_ids,
                                                                    self.cfg.type_vocab_size)):
            a = np.zeros_like(ids) if a is None and name == "token_type_ids" else a
            if a is not None:
                a = np.asarray(to_numpy_any(a))
                if a.shape != ids.shape:
                    raise ValueError(f"{name} has shape {a.shape} but the token ids have {ids.shape}")
                if a.size and (a.min() < 0 or a.max() >= hi):
                    raise ValueError(f"{name} values must lie in [0, {hi}), got {int(a.min())}..{int(a.max())}")
            out.append(a)
        return tuple(out)

    def encode(self, idx: Any, attention_mask: Any = None, token_type_ids: Any = None) -> Any:
        """The last block's hidden states (b, t, emb_dim); positions where attention_mask is 0 are never attended."""
        ids, am, types = self._check_ids(idx, attention_mask, token_type_ids)
        B = self.B
        x = self.tok_emb(B.tensor(ids)) + self.pos_emb(B.tensor(np.arange(ids.shape[1])))  # (b, t, d)
        x = self.drop_emb(self.emb_norm(x + self.type_emb(B.tensor(types))))
        mask = None if am is None or am.all() else B.tensor(am[:, None, None, :].astype(bool))  # (b, 1, 1, t)
        for block in self.trf_blocks:
            x = block(x, mask)
        return x

    def forward(self, idx: Any, attention_mask: Any = None, token_type_ids: Any = None) -> Any:
        """Masked-LM logits (b, t, vocab_size) for token ids (b, t); attention_mask (b, t): 1 = real, 0 = padding."""
        if self.mlm_head is None:
            raise ValueError("this BERT carries a classification head instead of the masked-LM one; use classify()")
        return self.mlm_head(self.encode(idx, attention_mask, token_type_ids))

    def pooled(self, idx: Any, attention_mask: Any = None, token_type_ids: Any = None) -> Any:
        """The pooler's tanh(W·h_[CLS] + b), (b, emb_dim): the input of a sequence classifier."""
        return self.pooler(self.encode(idx, attention_mask, token_type_ids))

    # ---- sequence classification (the paper's §4.1: a softmax layer over the pooled [CLS]) ----
    def replace_head(self, num_classes: int, seed: int = 123) -> "BertModel":
        """Swap the masked-LM head for a seeded Linear(emb_dim, num_classes) on the pooled [CLS] (the weights of
        BertForSequenceClassification's `classifier`); forward() is then unavailable and classify() gives logits."""
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes} must be >= 2")
        self.mlm_head = None  # the tied decoder goes with it: tok_emb stays, under its own name
        self.classifier = Linear(self.B, self.cfg.emb_dim, int(num_classes), rng=np.random.default_rng(seed))
        return self

    def classify(self, idx: Any, attention_mask: Any = None) -> Any:
        """Class logits (b, num_classes) from the pooled [CLS]; attention_mask defaults to ids != pad_token_id
        (right-padded batches, as gpt.classify's datasets are)."""
        if getattr(self, "classifier", None) is None:
            raise ValueError("this BERT has no classification head; call replace_head(num_classes) first")
        if attention_mask is None:
            attention_mask = (np.asarray(to_numpy_any(idx)) != self.cfg.pad_token_id).astype(np.int64)
        return self.classifier(self.pooled(idx, attention_mask))

    def trainable_parts(self, trainable: str) -> list[Module]:
        """The modules gpt.classify.set_trainable unfreezes: the head ("head": pooler + classifier), plus the last
        block ("last-block"), or nothing to add ("all": every parameter trains)."""
        head = [self.pooler] + ([self.classifier] if getattr(self, "classifier", None) is not None else [])
        return {"head": head, "last-block": [self.trf_blocks[-1], *head], "all": []}[trainable]


# ---- Hugging Face BertForMaskedLM -----------------------------------------------------------------------------------

# The one table: our name -> Hugging Face BertForMaskedLM name ({i}: the block index). The decoder weight is tied
# to the word embeddings (no key of its own unless tie_word_embeddings is false); cls.predictions.decoder.bias is
# the same tensor as cls.predictions.bias. The pooler is absent from BertForMaskedLM files (it keeps its seeded
# initial weights then) and present in BertForPreTraining / BertModel ones.
BERT_HF_NAME_MAP: dict[str, str] = {
    "tok_emb.weight": "bert.embeddings.word_embeddings.weight",
    "pos_emb.weight": "bert.embeddings.position_embeddings.weight",
    "type_emb.weight": "bert.embeddings.token_type_embeddings.weight",
    "emb_norm.scale": "bert.embeddings.LayerNorm.weight",
    "emb_norm.shift": "bert.embeddings.LayerNorm.bias",
    "trf_blocks.{i}.att.W_query.weight": "bert.encoder.layer.{i}.attention.self.query.weight",
    "trf_blocks.{i}.att.W_query.bias": "bert.encoder.layer.{i}.attention.self.query.bias",
    "trf_blocks.{i}.att.W_key.weight": "bert.encoder.layer.{i}.attention.self.key.weight",
    "trf_blocks.{i}.att.W_key.bias": "bert.encoder.layer.{i}.attention.self.key.bias",
    "trf_blocks.{i}.att.W_value.weight": "bert.encoder.layer.{i}.attention.self.value.weight",
    "trf_blocks.{i}.att.W_value.bias": "bert.encoder.layer.{i}.attention.self.value.bias",
    "trf_blocks.{i}.att.out_proj.weight": "bert.encoder.layer.{i}.attention.output.dense.weight",
    "trf_blocks.{i}.att.out_proj.bias": "bert.encoder.layer.{i}.attention.output.dense.bias",
    "trf_blocks.{i}.norm1.scale": "bert.encoder.layer.{i}.attention.output.LayerNorm.weight",
    "trf_blocks.{i}.norm1.shift": "bert.encoder.layer.{i}.attention.output.LayerNorm.bias",
    "trf_blocks.{i}.ff.0.weight": "bert.encoder.layer.{i}.intermediate.dense.weight",
    "trf_blocks.{i}.ff.0.bias": "bert.encoder.layer.{i}.intermediate.dense.bias",
    "trf_blocks.{i}.ff.2.weight": "bert.encoder.layer.{i}.output.dense.weight",
    "trf_blocks.{i}.ff.2.bias": "bert.encoder.layer.{i}.output.dense.bias",
    "trf_blocks.{i}.norm2.scale": "bert.encoder.layer.{i}.output.LayerNorm.weight",
    "trf_blocks.{i}.norm2.shift": "bert.encoder.layer.{i}.output.LayerNorm.bias",
    "pooler.dense.weight": "bert.pooler.dense.weight",
    "pooler.dense.bias": "bert.pooler.dense.bias",
    "mlm_head.dense.weight": "cls.predictions.transform.dense.weight",
    "mlm_head.dense.bias": "cls.predictions.transform.dense.bias",
    "mlm_head.norm.scale": "cls.predictions.transform.LayerNorm.weight",
    "mlm_head.norm.shift": "cls.predictions.transform.LayerNorm.bias",
    "mlm_head.bias": "cls.predictions.bias",
    "mlm_head.decoder.weight": "cls.predictions.decoder.weight",
}
_OPTIONAL = ("pooler.dense.weight", "pooler.dense.bias")  # BertForMaskedLM saves no pooler
# keys a BERT file may hold that this model has no use for: the pre-training NSP head, a duplicate of the MLM bias,
# the position-ids buffer of older transformers versions
_IGNORED = re.compile(r"^(cls\.seq_relationship\..*|cls\.predictions\.decoder\.bias|bert\.embeddings\.position_ids)$")


def _canonical_bert_key(key: str) -> str:
    """A Hugging Face BERT key in BertForMaskedLM spelling: bare BertModel keys get `bert.`; TF-era LayerNorm
    gamma/beta become weight/bias."""
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))
    return key if key.startswith(("bert.", "cls.")) else "bert." + key


def _expand_bert(cfg: BertConfig) -> dict[str, str]:
    """BERT_HF_NAME_MAP with {i} expanded: our name -> Hugging Face name, for this config's blocks and tying."""
    out = {}
    for ours, hf in BERT_HF_NAME_MAP.items():
        if ours == "mlm_head.decoder.weight" and cfg.tie_weights:
            continue
        for i in (range(cfg.n_layers) if "{i}" in ours else [None]):
            out[ours.format(i=i)] = hf.format(i=i)
    return out


def hf_bert_state_dict_to_ours(sd: Mapping[str, Any], cfg: BertConfig, source: str = "state dict"
                               ) -> dict[str, np.ndarray]:
    """Our state dict from a Hugging Face BERT one (NumPy arrays); a missing key raises naming it."""
    from .weights import CheckpointError

    given = {_canonical_bert_key(k): v for k, v in sd.items()}
    out: dict[str, np.ndarray] = {}
    for ours, hf in _expand_bert(cfg).items():
        if hf in given:
            out[ours] = to_numpy_any(given.pop(hf))
        elif ours not in _OPTIONAL:
            raise CheckpointError(f"{source}: missing key {hf!r} (our {ours!r}); is this a BertForMaskedLM file?")
    given.pop("cls.predictions.decoder.weight", None)  # tied: the word embeddings already hold it
    unknown = sorted(k for k in given if not _IGNORED.match(k))
    if unknown:
        raise CheckpointError(f"{source}: keys {unknown[:5]} do not belong to a BERT masked-LM model")
    return out


def ours_to_hf_bert_state_dict(sd: Mapping[str, Any], cfg: BertConfig) -> dict[str, np.ndarray]:
    """The inverse: a Hugging Face BertForMaskedLM state dict (plus bert.pooler.*) from ours."""
    return {hf: to_numpy_any(sd[ours]) for ours, hf in _expand_bert(cfg).items() if ours in sd}


def bert_config_from_hf(config: Mapping[str, Any], source: str = "config.json") -> BertConfig:
    """Our BertConfig from a Hugging Face BERT config.json (model_type "bert", hidden_act "gelu")."""
    if config.get("model_type") != "bert":
        raise ValueError(f"{source}: model_type {config.get('model_type')!r} is not 'bert'")
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"{source}: hidden_act {act!r} is not supported; BERT's is 'gelu' (the exact, erf form)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{source}: position_embedding_type {config['position_embedding_type']!r}: only "
                         f"'absolute' (BERT's learned positions) is supported")
    return BertConfig(vocab_size=config["vocab_size"], context_length=config.get("max_position_embeddings", 512),
                      emb_dim=config["hidden_size"], n_heads=config["num_attention_heads"],
                      n_layers=config["num_hidden_layers"], hidden_dim=config["intermediate_size"],
                      type_vocab_size=config.get("type_vocab_size", 2),
                      drop_rate=config.get("hidden_dropout_prob", 0.1),
                      att_drop_rate=config.get("attention_probs_dropout_prob", 0.1),
                      layer_norm_eps=config.get("layer_norm_eps", 1e-12),
                      pad_token_id=config.get("pad_token_id") if config.get("pad_token_id") is not None else 0,
                      tie_weights=bool(config.get("tie_word_embeddings", True)))


def load_hf_bert(path: str | os.PathLike, backend: Backend | str | None = None) -> BertModel:
    """A BertModel (eval mode) holding a Hugging Face BERT directory's weights (config.json + model.safetensors,
    a sharded index or pytorch_model.bin), cast to the backend's dtype. `backend`: a Backend or its name."""
    from .weights import _resolve, read_hf_checkpoint

    config_path, weights_path = _resolve(path)
    try:
        hf_config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from None
    cfg = bert_config_from_hf(hf_config, source=str(config_path))
    ours = hf_bert_state_dict_to_ours(read_hf_checkpoint(weights_path), cfg, source=str(weights_path))
    model = BertModel(cfg, backend=backend, seed=0)
    model.load_state_dict(ours, strict=False)  # strict on every key but the optional pooler (checked above)
    model.eval()
    return model


__all__ = ["BertConfig", "BertModel", "BidirectionalAttention", "BertBlock", "MaskedLMHead", "Pooler", "ExactGELU",
           "BERT_HF_NAME_MAP", "load_hf_bert", "hf_bert_state_dict_to_ours", "ours_to_hf_bert_state_dict",
           "bert_config_from_hf", "as_bert_config"]
