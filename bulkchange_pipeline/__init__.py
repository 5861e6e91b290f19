"""bulkchange_pipeline: bulk changes to cellular IoT and mobility devices, run by Dagster.

Layers (data flows one way): intake -> store -> defs (Dagster) -> engine -> carriers -> store.
`domain` is pure Python and imports nothing else of ours. `cli` (the `bulkchange` command) is the
composition root that wires the layers together; `settings` reads every environment variable.
"""

__version__ = "0.1.0"
