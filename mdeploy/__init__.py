"""mdeploy: convert, optimize, validate and benchmark trained models for deployment."""

__version__ = "0.1.0"
