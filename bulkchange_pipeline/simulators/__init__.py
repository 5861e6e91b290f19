"""Loopback HTTP simulators of the carrier APIs (stateful, rate-limited, fault-injecting), used by
the demo, the tests and the benchmarks. `python -m bulkchange_pipeline.simulators --help`.
Each runs on a `Clock` (`clock=`): real time by default, a `ManualClock` a test steps forward."""

from .clock import SYSTEM_CLOCK, Clock, ManualClock
from .faults import AccountGate, Fault, FaultConfig, FaultInjector
from .server import ServerHandle, run_app_in_thread

__all__ = [
    "SYSTEM_CLOCK",
    "AccountGate",
    "Clock",
    "Fault",
    "FaultConfig",
    "FaultInjector",
    "ManualClock",
    "ServerHandle",
    "run_app_in_thread",
]
