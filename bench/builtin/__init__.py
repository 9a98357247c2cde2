"""Built-in plugins: the registered classifiers and datasets (imports core only)."""
