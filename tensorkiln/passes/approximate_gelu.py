"""GELU approximation (opt-in): GELU (erf) layers become GELU (tanh approximation), which cuBLASLt applies in its
GEMM epilogue (kernels/cuda/cublas.py), where the erf form needs a kernel of its own after the GEMM.

    gelu_erf(x) = x Phi(x)   =>   gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))

The two differ by up to about 2e-4 in absolute value (near |x| = 2), more than FP16 rounds results of that size:
the outputs change, which is why the pass is opt-in (`kiln build --passes=+approximate_gelu`), like onnxruntime's
transformer optimizer, whose GELU approximation is off by default. Models trained with the tanh form (GPT-2's
gelu_new) need no pass: recognize_gelu finds their GELU (tanh) directly.
"""
from __future__ import annotations

import dataclasses

from ..ir import ops
from ..ir.graph import Network
from ..ir.ops import ActivationType as A
from .manager import Pass, register_pass


@register_pass
class ApproximateGelu(Pass):
    name = "approximate_gelu"

    def run(self, network: Network) -> bool:
        changed = False
        for layer in network.layers:
            if layer.kind == ops.Activation.KIND and layer.op.type is A.GELU_ERF:
                layer.op = dataclasses.replace(layer.op, type=A.GELU_TANH)
                self.count("approximated")
                changed = True
        return changed
