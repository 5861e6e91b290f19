"""Intake: CSV/JSON parsing, validation (dry run), submission, the CLI (and the HTTP app)."""
