"""YAML call flows: model, validation (`switchctl check`) and the runtime that drives a Call.

Public API:
- `check_flows(paths, *, sound_dirs, site_values, lists, known_extensions=None, known_gateways=None,
  numbering=None, display_root=None)`
  -> `CheckResult` (`.flows: FlowSet`, `.diagnostics: list[Diagnostic]`, `.ok`, `.report()`)
- `FlowSet.match(destination) -> (Flow, captures) | None`
- `FlowRunner(flowset, *, site_values, lists, clock=..., sound_dirs=(), billing=None, numbering=None,
  voicemail=None, transfers=None)` and `await runner.run(call, flow, captures)`
  -> `FlowTrace` (`.steps`, `.result`, `.error`, `.cause`, `.variables`)
"""

from .check import CheckResult, check_flows, prompt_exists
from .model import Diagnostic, Flow, FlowSet, Node
from .runtime import FlowRunner, FlowRuntimeError, FlowTrace

__all__ = [
    "CheckResult",
    "Diagnostic",
    "Flow",
    "FlowRunner",
    "FlowRuntimeError",
    "FlowSet",
    "FlowTrace",
    "Node",
    "check_flows",
    "prompt_exists",
]
