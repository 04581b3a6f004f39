"""The CLI's garbage-collector settings, checked in a child interpreter: gc state is
process-wide and pytest's own must stay as it is."""

import subprocess
import sys

from worker.gc_tuning import YOUNG_THRESHOLD


def test_tune_for_worker_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    code = (
        "import gc; from worker.gc_tuning import tune_for_worker; before = gc.get_threshold(); "
        "tune_for_worker(); print(gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:], "
        "gc.get_freeze_count() > 1000)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == [str(YOUNG_THRESHOLD), "True", "True"]
