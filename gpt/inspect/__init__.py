"""Looking inside a GPT (`tinygpt inspect`): `measure` runs one forward and backward pass of a prompt's next-token
loss and returns what it saw (attention maps, gradients against the torch float64 reference, activation statistics,
one block's autograd graph); `render` draws it (PNGs, graph.svg through graphviz, a static index.html)."""
from .measure import (GELU_DEAD_BELOW, REL_ERR_FLOOR, InspectReport, attention_weights, gradients_by_name,
                      inspect_model, next_token_loss, prompt_ids, reference_gradients, relative_errors,
                      token_strings)
from .render import (gradient_table, graph_dot, index_html, plot_attention, plot_gradient_norms, render_graph,
                     write_report)

__all__ = ["InspectReport", "inspect_model", "prompt_ids", "token_strings", "attention_weights", "next_token_loss",
           "gradients_by_name", "reference_gradients", "relative_errors", "GELU_DEAD_BELOW", "REL_ERR_FLOOR",
           "plot_attention", "plot_gradient_norms", "gradient_table", "graph_dot", "render_graph", "write_report",
           "index_html"]
