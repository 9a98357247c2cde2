"""Analysis: pure functions from stored records to findings (imports store and core)."""
