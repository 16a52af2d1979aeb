"""Cost accounting for (pruned) models: parameters, weight memory, FLOPs, SOPs, energy and latency."""

from psvit.cost.analytic import (
    count_flops,
    count_params,
    layer_macs,
    memory_saving,
    param_shapes,
    spike_probes,
    weight_bytes,
)
from psvit.cost.firing import measure_firing_rates
from psvit.cost.latency import measure_latency
from psvit.cost.report import (
    E_AC_PJ,
    E_MAC_PJ,
    CostReport,
    cost_report,
    energy_mj,
    report_forward_images,
    report_single_forwards,
)

__all__ = [
    "E_AC_PJ",
    "E_MAC_PJ",
    "CostReport",
    "cost_report",
    "count_flops",
    "count_params",
    "energy_mj",
    "layer_macs",
    "measure_firing_rates",
    "measure_latency",
    "memory_saving",
    "param_shapes",
    "report_forward_images",
    "report_single_forwards",
    "spike_probes",
    "weight_bytes",
]
