"""Carrier conformance: each carrier's public description, machine-readable, with its sources.

`<carrier>.yaml` describes the operations the pipeline uses as the public material describes them
(`../shared/reference/carriers.md`, `../shared/specs/`, vendor pages), never as our client sends
them; `contract.py` loads one and checks bodies against it; `recording.py` serves a simulator
behind an ASGI wrapper that keeps every request, so a test can compare what our client sent with
the description field by field.
"""
