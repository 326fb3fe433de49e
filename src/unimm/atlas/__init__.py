"""The decision atlas: equal-budget sweeps over strategies x layer kinds x sizes, and a report of what they show."""

from unimm.atlas.config import AtlasConfig, load_atlas
from unimm.atlas.plan import PlannedRun, plan_runs
from unimm.atlas.runner import run_atlas

__all__ = ["AtlasConfig", "PlannedRun", "load_atlas", "plan_runs", "run_atlas"]
