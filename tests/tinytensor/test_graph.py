"""tinytensor.graph: nodes, edges and the bytes each op keeps for backward, for expressions whose saved arrays are
known from the ops' source (ops.py, functional.py), and one GPT block whose op list is known from the model."""
from __future__ import annotations

import numpy as np
import pytest

import tinytensor as tt
from tinytensor import functional as F


def test_small_expression_nodes_edges_and_saved_bytes():
    x = tt.tensor(np.ones((3, 4)), requires_grad=True)
    y = (x * x).exp().sum()
    g = tt.graph(y)
    assert [n.op for n in g.nodes] == ["Tensor", "Mul", "Exp", "Sum"]
    assert [n.shape for n in g.nodes] == [(3, 4), (3, 4), (3, 4), ()]
    assert g.edges == [(0, 1), (0, 1), (1, 2), (2, 3)]            # x enters Mul twice
    mul, exp, total = g.nodes[1:]
    assert mul.saved_bytes == 96 and mul.kept_bytes == 0          # saves x twice: one leaf buffer, owned by x
    assert set(mul.saved) == {"a", "b"}
    assert exp.saved_bytes == exp.kept_bytes == 96                # its own output, 12 float64
    assert total.saved_bytes == 0                                 # Sum keeps only a shape
    assert g.kept_bytes_by_op() == {"Mul": 0, "Exp": 96, "Sum": 0} and g.total_kept_bytes() == 96


def test_fused_ops_saved_arrays():
    rng = np.random.default_rng(0)
    x = tt.tensor(rng.standard_normal((2, 5, 8)), requires_grad=True)      # float64
    w = tt.Parameter(rng.standard_normal((6, 8)))
    h = F.linear(x, w)                                                      # saves x and w (both leaves)
    q = h.reshape(2, 5, 2, 3).transpose(1, 2)                               # (2, 2, 5, 3)
    out = F.scaled_dot_product_attention(q, q, q, is_causal=True)
    g = tt.graph(out, params={"w": w})
    assert [n.op for n in g.ops()] == ["Linear", "Reshape", "Transpose", "Attention"]
    assert sorted(str(n.name) for n in g.nodes if n.is_leaf) == ["None", "w"]
    lin = g.ops()[0]
    assert lin.saved_bytes == 2 * 5 * 8 * 8 + 6 * 8 * 8 and lin.kept_bytes == 0
    att = g.ops()[-1]
    # q, k, v are views of the Linear's output (one 2·5·6 buffer) plus the probabilities (2, 2, 5, 5)
    assert att.saved["saved.probs"][:2] == ((2, 2, 5, 5), "float64")
    assert att.saved_bytes == att.kept_bytes == (2 * 5 * 6 + 2 * 2 * 5 * 5) * 8


def test_stop_at_cuts_a_subgraph_and_freed_graph_raises():
    a = tt.tensor(np.ones(4), requires_grad=True)
    b = a * 2.0
    c = (b + 1.0).tanh()
    g = tt.graph(c, stop_at=[b])
    assert [n.op for n in g.nodes] == ["Tensor", "Tensor", "Add", "Tanh"] and g.nodes[0].is_leaf
    assert sum(n.is_leaf for n in g.nodes) == 2                   # b (cut) and the constant 1.0
    c.sum().backward()
    with pytest.raises(RuntimeError, match="call graph\\(\\) before backward"):
        tt.graph(c)
    with pytest.raises(TypeError, match="needs a tinytensor Tensor"):
        tt.graph(np.ones(3))


def test_gpt_block_ops():
    import gpt

    cfg = dict(vocab_size=20, context_length=8, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0, qkv_bias=False)
    model = gpt.GPTModel(cfg, backend="numpy")
    block = model.trf_blocks[0]
    x = tt.tensor(np.random.default_rng(1).standard_normal((1, 6, 8)).astype(np.float32), requires_grad=True)
    g = tt.graph(block(x), stop_at=[x])
    ops = [n.op for n in g.ops()]
    assert sorted(ops) == sorted(["LayerNorm", "Linear", "Reshape", "Transpose", "Linear", "Reshape", "Transpose",
                                  "Linear", "Reshape", "Transpose", "Attention", "Transpose", "Reshape", "Linear",
                                  "Add", "LayerNorm", "Linear", "GELU", "Linear", "Add"])
    assert sum(n.op == "Parameter" for n in g.nodes) == 13    # W_q, W_k, W_v; out_proj w, b; 2 FF w, b; 2 norms
