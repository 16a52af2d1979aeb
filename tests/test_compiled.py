"""``compute.compile``: the LIF neurons are graph-safe (one graph, no module state), compiled evaluation gives the
eager logits, and the cache of compiled models is keyed by shape (a pruned model is compiled again)."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional

from psvit.models import create_model
from psvit.models.lif import LIFNode
from psvit.prune import prune
from psvit.train import Compute
from psvit.train.compiled import for_evaluation, shape_key
from psvit.train.loop import predict

SMALL = {
    "variant": "cifar",
    "img_size": 16,
    "patch_size": 4,
    "embed_dim": 32,
    "num_heads": 2,
    "depth": 2,
    "T": 4,
    "in_channels": 1,
    "num_classes": 10,
}


def test_spikformer_compiles_to_one_graph_without_neuron_state() -> None:
    """``fullgraph=True`` fails on any graph break; dynamo's eager backend traces without a C++ compiler."""
    torch.manual_seed(0)
    model = create_model("spikformer", **SMALL).eval()
    images = torch.rand(3, 1, 16, 16)
    eager = predict(model, images)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    first, again = predict(compiled, images), predict(compiled, images)
    assert torch.equal(first, eager) and torch.equal(again, eager)
    assert all(not isinstance(m.v, torch.Tensor) for m in model.modules() if isinstance(m, LIFNode))
    with torch.no_grad():
        compiled(images)
    functional.reset_net(compiled)  # the reset reaches the neurons through the compiled wrapper


def test_compiled_models_are_cached_by_shape() -> None:
    torch.manual_seed(0)
    model = create_model("spikformer", **SMALL).eval()
    eager = Compute(torch.device("cpu"))
    assert for_evaluation(model, eager) is model
    compiled = Compute(torch.device("cpu"), compile=True)
    runner = for_evaluation(model, compiled)  # torch.compile is lazy: nothing is compiled before a forward
    assert runner is not model and for_evaluation(model, compiled) is runner
    assert runner._orig_mod is model
    pruned = prune(model, {"embed": 0.5})
    assert shape_key(pruned, compiled) != shape_key(model, compiled)
    assert for_evaluation(pruned, compiled) is not runner
    assert shape_key(model, compiled) != shape_key(model, Compute(torch.device("cpu"), amp="bf16", compile=True))
    assert "evaluation compiled" in compiled.describe() and "compiled" not in eager.describe()
