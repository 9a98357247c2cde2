"""Running: plan, execute, store one grid (imports builtin, analysis, store, core and the plugins)."""
