"""A reconstructable alpha job for re-execution tests (settings from QUANT_* variables)."""

from quant_assets.definitions import ALPHA_JOB, build_definitions
from quant_resources.settings import get_settings


def alpha_job():
    return build_definitions(get_settings()).resolve_job_def(ALPHA_JOB)
