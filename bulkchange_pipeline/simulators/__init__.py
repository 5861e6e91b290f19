"""Loopback HTTP simulators of the carrier APIs (stateful, rate-limited, fault-injecting), used by
the demo, the tests and the benchmarks. `python -m bulkchange_pipeline.simulators --help`."""

from .faults import AccountGate, Fault, FaultConfig, FaultInjector
from .server import ServerHandle, run_app_in_thread

__all__ = [
    "AccountGate",
    "Fault",
    "FaultConfig",
    "FaultInjector",
    "ServerHandle",
    "run_app_in_thread",
]
