"""``unimm reports`` / ``make reports``: every number the docs quote, regenerated from one command."""

from unimm.reports.run import describe, run_reports
from unimm.reports.tables import rewrite_tables, stale_tables
from unimm.reports.targets import TARGETS, Target, select

__all__ = ["TARGETS", "Target", "describe", "rewrite_tables", "run_reports", "select", "stale_tables"]
