"""Flows: prompt graphs whose steps run concurrently, their token streams merged into one event stream."""

from vivace.flows.events import FlowEvent, FlowFinished, StepDelta, StepFailed, StepFinished, StepStarted
from vivace.flows.executor import FlowResult, StepError, collect, run_flow
from vivace.flows.loader import FlowBuilder, find_flow, load_flow, load_flows, loads_flow
from vivace.flows.model import Flow, FlowError, FlowInput, Step
from vivace.flows.pool import ProviderPool

__all__ = [
    "Flow",
    "FlowBuilder",
    "FlowError",
    "FlowEvent",
    "FlowFinished",
    "FlowInput",
    "FlowResult",
    "ProviderPool",
    "Step",
    "StepDelta",
    "StepError",
    "StepFailed",
    "StepFinished",
    "StepStarted",
    "collect",
    "find_flow",
    "load_flow",
    "load_flows",
    "loads_flow",
    "run_flow",
]
