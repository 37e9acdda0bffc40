"""One Report type for every verb, and its renderings (JSON, Markdown, JUnit XML, HTML, rich)."""

from mdeploy.reports.report import Report, Step, environment

__all__ = ["Report", "Step", "environment"]
