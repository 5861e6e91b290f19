"""Reliability and security under injected faults (DESIGN sections 8 and 9; docs/reliability.md)."""
