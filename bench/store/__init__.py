"""The results store: run folders, records, provenance (imports core only)."""
