"""Rendering: tables, plots, the leaderboard page, README blocks, wandb (imports analysis, store, core)."""
