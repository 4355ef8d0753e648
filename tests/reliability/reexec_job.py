"""A reconstructable data job for the re-execution test (settings from QUANT_* variables)."""

from quant_assets.definitions import DATA_JOB, build_definitions
from quant_resources.settings import get_settings


def data_job():
    return build_definitions(get_settings()).resolve_job_def(DATA_JOB)
