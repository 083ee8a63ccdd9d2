"""Kernel pairs: pure forward/backward functions on `xp` arrays (NumPy or CuPy), one concept per file.

Each forward returns its output plus whatever backward needs; each backward is derived by hand, with the equation
in its docstring and the terms of the derivation cited in comments (after llm.c's `layernorm_backward`). They know
nothing of `Tensor`; `tinytensor.functional` wraps each pair in a `Function` for autograd.

Speed paths, each beside its plain reference: `flash_attention.py` (tiled FlashAttention pair), `adamw.py` (the
per-tensor update and its cache-blocked twin over flat buffers), `matmul.py` (single-threaded BLAS calls split
over `threads.py`'s pool), the in-place GELU pair in `gelu.py`, and `native.py`: C twins of LayerNorm, GELU,
softmax, the cross-entropy's rows and AdamW (tinytensor/csrc/native.c, compiled at install), which the autograd
wrappers use on NumPy arrays where they were built; the NumPy kernels stay the reference.
"""
from .attention import attention_backward, attention_forward
from .dropout import dropout_backward, dropout_forward
from .gelu import gelu_erf_backward, gelu_erf_forward, gelu_tanh_backward, gelu_tanh_forward
from .layer_norm import layer_norm_backward, layer_norm_forward
from .rms_norm import rms_norm_backward, rms_norm_forward
from .rotary import rotary_backward, rotary_forward
from .sigmoid import log_sigmoid_backward, log_sigmoid_forward
from .silu import silu_backward, silu_forward
from .softmax import (cross_entropy_backward, cross_entropy_forward, log_softmax_backward, log_softmax_forward,
                      softmax_backward, softmax_forward)

__all__ = ["attention_forward", "attention_backward", "dropout_forward", "dropout_backward", "gelu_tanh_forward",
           "gelu_tanh_backward", "gelu_erf_forward", "gelu_erf_backward", "layer_norm_forward",
           "layer_norm_backward", "rms_norm_forward", "rms_norm_backward", "silu_forward", "silu_backward",
           "log_sigmoid_forward", "log_sigmoid_backward",
           "rotary_forward", "rotary_backward", "softmax_forward", "softmax_backward", "log_softmax_forward",
           "log_softmax_backward", "cross_entropy_forward", "cross_entropy_backward"]
