"""Example plugins that live outside the built-in packages (used as ``module:Class``)."""
