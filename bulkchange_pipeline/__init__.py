"""bulkchange_pipeline: bulk changes to cellular IoT and mobility devices, run by Dagster.

Layers (data flows one way): intake -> store -> defs (Dagster) -> engine -> carriers -> store.
`domain` is pure Python and imports nothing else of ours.
"""

__version__ = "0.1.0"
