"""defense-bench: compare adversarial defenses for image classifiers under pluggable attacks."""

__version__ = "0.1.0"
