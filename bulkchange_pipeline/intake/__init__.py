"""Intake: CSV/JSON parsing, validation (dry run), submission and the HTTP app (API and carrier callbacks).

The command line that drives it is ``bulkchange_pipeline.cli``, the composition root.
"""
