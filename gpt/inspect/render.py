"""Drawing an `InspectReport` (gpt/inspect/measure.py): attention-map PNGs, a gradient-norm bar chart, the block's autograd
graph as SVG (graphviz's `dot`), and a static, offline index.html that shows them with the numbers.

Matplotlib is used through `matplotlib.figure.Figure` (no pyplot, no global backend state), so it works in scripts,
servers and notebooks alike. Returns paths and notes; never prints.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

_BLOCK = re.compile(r"^trf_blocks\.(\d+)\.(.+)$")


def _label(token: str) -> str:
    """A token as a readable tick label (whitespace made visible, control characters escaped)."""
    return repr(token)[1:-1].replace(" ", "␣") or "∅"


def plot_attention(maps: np.ndarray, tokens: list[str], path: str | Path, title: str = "") -> Path:
    """One layer's heads (heads, t, t) as a grid of heat maps, rows = queries, columns = keys, labelled by token."""
    from matplotlib.figure import Figure

    heads, t = maps.shape[0], maps.shape[-1]
    cols = min(heads, 4)
    rows = -(-heads // cols)
    side = 1.2 + 0.28 * t
    fig = Figure(figsize=(cols * side, rows * side + 0.5), layout="constrained")
    labels = [_label(s) for s in tokens]
    for h in range(rows * cols):
        ax = fig.add_subplot(rows, cols, h + 1)
        if h >= heads:
            ax.axis("off")
            continue
        ax.imshow(maps[h], vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xticks(range(t), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(t), labels, fontsize=7)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)
    return Path(path)


def gradient_table(gradients: dict[str, dict[str, Any]]) -> tuple[list[str], list[str], np.ndarray]:
    """(layers, kinds, norms[layer, kind]): "embed" and "final" around the blocks; kind = name within its layer."""
    layers, kinds, cells = ["embed"], [], {}
    for name, g in gradients.items():
        m = _BLOCK.match(name)
        if m:
            layer, kind = m.group(1), m.group(2)
        else:
            layer, kind = ("embed" if name.startswith(("tok_emb", "pos_emb")) else "final"), name
        if layer not in layers and layer != "final":
            layers.append(layer)
        if kind not in kinds:
            kinds.append(kind)
        cells[layer, kind] = g["norm"]
    layers.append("final")
    norms = np.array([[cells.get((la, k), np.nan) for k in kinds] for la in layers])
    return layers, kinds, norms


def plot_gradient_norms(gradients: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """A grouped bar chart of gradient norms (log scale): one group per layer, one bar per parameter kind."""
    from matplotlib.figure import Figure

    layers, kinds, norms = gradient_table(gradients)
    fig = Figure(figsize=(max(6.0, 0.9 * len(layers) + 4), 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(kinds)
    cmap = __import__("matplotlib").colormaps["tab20"]
    for j, kind in enumerate(kinds):
        vals = np.where(np.isfinite(norms[:, j]) & (norms[:, j] > 0), norms[:, j], np.nan)
        ax.bar(np.arange(len(layers)) + (j - len(kinds) / 2 + 0.5) * width, vals, width, label=kind,
               color=cmap(j % 20))
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), [la if not la.isdigit() else f"block {la}" for la in layers])
    ax.set_ylabel("‖gradient‖")
    ax.set_title("gradient norm by layer and parameter")
    ax.legend(fontsize=6, ncols=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=90)
    return Path(path)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def graph_dot(graph: Any, title: str = "") -> Any:
    """A graphviz.Digraph of a tinytensor Graph: op nodes `op<i>` (op, output shape, saved bytes and, where they
    differ, the new bytes: not a parameter's, not kept by an earlier op), leaves `leaf<i>`."""
    import graphviz

    dot = graphviz.Digraph("block", graph_attr={"rankdir": "TB", "label": title, "fontsize": "12"},
                           node_attr={"fontsize": "10", "fontname": "Helvetica"})
    for n in graph.nodes:
        shape = "×".join(map(str, n.shape)) or "scalar"
        if n.is_leaf:
            dot.node(f"leaf{n.id}", f"{n.name or 'input'}\n{shape}", shape="note", style="filled",
                     fillcolor="#e8eef7" if n.op == "Parameter" else "#f3f3f3")
        else:
            kept = f", {_human(n.kept_bytes)} new" if n.kept_bytes != n.saved_bytes else ""  # beyond weights, reuse
            dot.node(f"op{n.id}", f"{n.op}\n{shape} {n.dtype}\nsaved {_human(n.saved_bytes)}{kept}", shape="box",
                     style="rounded,filled", fillcolor="#fdf1dc" if n.saved_bytes else "#ffffff")
    kinds = {n.id: ("leaf" if n.is_leaf else "op") for n in graph.nodes}
    for a, b in graph.edges:
        dot.edge(f"{kinds[a]}{a}", f"{kinds[b]}{b}")
    return dot


def render_graph(graph: Any, path: str | Path, title: str = "") -> str | None:
    """Write the graph as SVG at `path`; None on success, else a one-line reason (no graphviz package or `dot`)."""
    try:
        import graphviz
    except ImportError:
        return "graph.svg skipped: the graphviz Python package is missing (pip install graphviz)"
    path = Path(path)
    try:
        svg = graph_dot(graph, title).pipe(format="svg")
    except graphviz.ExecutableNotFound:
        return ("graph.svg skipped: graphviz's `dot` program is not installed (apt-get install graphviz, "
                "brew install graphviz, or conda install graphviz)")
    path.write_bytes(svg)
    return None


def write_report(report: Any, out_dir: str | Path) -> tuple[dict[str, Path], list[str]]:
    """report.json, attention_layer<i>.png, gradient_norms.png, graph.svg (if dot runs) and index.html in out_dir.

    Returns ({what: path}, notes) where notes say what was skipped and why.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"report": out / "report.json"}
    files["report"].write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
    for i, maps in enumerate(report.attention):
        files[f"attention_layer{i}"] = plot_attention(maps, report.tokens, out / f"attention_layer{i}.png",
                                                      f"layer {i}: attention weights (row: query, column: key)")
    files["gradient_norms"] = plot_gradient_norms(report.gradients, out / "gradient_norms.png")
    notes = list(report.notes)
    if report.graph is not None:
        why = render_graph(report.graph, out / "graph.svg", "transformer block 0: ops, output shapes, bytes "
                                                           "kept for backward")
        if why is None:
            files["graph"] = out / "graph.svg"
        else:
            notes.append(why)
    files["index"] = out / "index.html"
    files["index"].write_text(index_html(report, files, notes), encoding="utf-8")
    return files, notes


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3g}"


def index_html(report: Any, files: dict[str, Path], notes: list[str]) -> str:
    """A self-contained page (relative links to the PNGs and SVG only, no scripts, no network)."""
    toks = " ".join(f"<code>{html.escape(_label(t))}</code>" for t in report.tokens + report.targets[-1:])
    parts = [f"<h1>tinygpt inspect</h1><p>prompt tokens: {toks}</p>",
             f"<p>next-token loss {report.loss:.4f}; reference gradients: {html.escape(report.reference or 'none')}</p>"]
    parts += [f"<p class=note>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Attention</h2>")
    parts += [f'<img src="{files[k].name}" alt="{k}">' for k in files if k.startswith("attention_layer")]
    parts.append('<h2>Gradients</h2><img src="gradient_norms.png" alt="gradient norms">')
    parts.append(_table(["parameter", "‖grad‖", "rel. error vs torch float64"],
                        [[n, _fmt(g["norm"]), _fmt(g["rel_err_vs_torch"])] for n, g in report.gradients.items()]))
    parts.append("<h2>Activations</h2>")
    parts.append(_table(["block", "mean", "std", "share of GELU inputs < −3"],
                        [[i, _fmt(a["mean"]), _fmt(a["std"]), _fmt(a["gelu_below_-3"])]
                         for i, a in enumerate(report.activations)]))
    if "graph" in files:
        parts.append('<h2>Autograd graph of block 0</h2><img src="graph.svg" alt="autograd graph">')
    if report.graph is not None:
        kept = report.graph.kept_bytes_by_op()
        parts.append(_table(["op", "bytes kept for backward"], [[k, _human(v)] for k, v in kept.items()]))
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}img{max-width:100%;display:block;"
             "margin:1em 0}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:2px 8px}.note{color:#a40}")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>tinygpt inspect</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


__all__ = ["plot_attention", "plot_gradient_norms", "gradient_table", "graph_dot", "render_graph", "write_report",
           "index_html"]
