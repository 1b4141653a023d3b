"""dse: design-space exploration of Transformer inference under the memory wall.

The public API: design pytrees, the hardware pytree, ``evaluate`` and the per-op table, catalog
loading by name. Everything composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

dse turns on JAX's 64-bit mode on import: FLOP counts of large models exceed float32's 24-bit
mantissa, and counts are meant to be exact to the digit. Sweeps may still run in float32.
"""
import jax

jax.config.update("jax_enable_x64", True)

from dse.core.accuracy import AccuracyParams, accuracy_terms  # noqa: E402
from dse.core.conventions import DEFAULT, LLM_VIEWER, Conventions, conventions  # noqa: E402
from dse.core.design import Arch, Design, DesignError, Quant, Workload, make_arch, validate_design  # noqa: E402
from dse.core.hardware import Hardware, ideal, make_hardware, validate_hardware  # noqa: E402
from dse.core.metrics import evaluate, param_counts, phase_tables  # noqa: E402
from dse.explore.tables import ops_frame  # noqa: E402
from dse.explore.api import optimize, sweep  # noqa: E402
from dse.app.build import load_accuracy, load_hardware, load_model  # noqa: E402
from dse.app.hf_config import from_hf_config  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AccuracyParams", "Arch", "Conventions", "DEFAULT", "Design", "DesignError", "Hardware", "LLM_VIEWER",
    "Quant", "Workload", "accuracy_terms", "conventions", "evaluate", "from_hf_config", "ideal", "load_accuracy",
    "load_hardware", "load_model", "make_arch", "make_hardware", "ops_frame", "optimize", "param_counts", "phase_tables", "sweep", "validate_design",
    "validate_hardware", "__version__",
]
