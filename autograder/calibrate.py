"""Fair thresholds: train the answer key under the grading budget across seeds, exactly as a submission is run.

The accuracy threshold in assignment.toml should sit below what the answer key itself reaches on a bad seed,
or a correct submission can lose points to luck. This measures that spread through the real pipeline
(sandbox, harness, the resident loader, the trusted evaluation) and recommends a threshold and a margin.
"""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from .config import Assignment
from .grade import Grader, Options
from .judge import model_class, trusted_accuracy
from .observe import tensors
from .sanitize import sanitize


@dataclass(frozen=True)
class Calibration:
    accuracies: tuple[float, ...]  # one per seed, in seed order
    margin: float  # retrain a submission this close below the threshold with a second seed
    threshold: float

    @property
    def summary(self) -> str:
        a = self.accuracies
        return (f"{len(a)} seeds: min {min(a):.4f}, median {statistics.median(a):.4f}, max {max(a):.4f}, "
                f"stdev {statistics.pstdev(a):.4f}; recommended threshold {self.threshold:.2f}, "
                f"margin {self.margin:.3f}")


def recommend(accuracies: list[float]) -> tuple[float, float]:
    """Threshold: two standard deviations (at least half a point) below the worst seed, rounded down to 0.01."""
    margin = max(0.005, 2 * statistics.pstdev(accuracies))
    return math.floor((min(accuracies) - margin) * 100) / 100, round(margin, 3)


def calibrate(assignment: Assignment, *, seeds: int, options: Options, progress=None) -> Calibration:
    # The answer key is the source notebook itself: its solution markers are comments to Python.
    clean = sanitize(assignment.source_notebook.read_bytes(), assignment)
    grader = Grader(assignment, options)
    model = model_class(grader.reference, assignment)
    try:
        def one(seed: int) -> float:
            _, obs = grader.sandboxed(clean, replace(grader.settings, seed_offset=seed))
            record = obs.first("weights")
            state = tensors(record.get("weights")) if record else None
            accuracy = trusted_accuracy(model, state, grader.trusted, grader.device) if state else None
            if accuracy is None:
                raise RuntimeError(f"the answer key produced no usable weights with seed offset {seed}")
            if progress:
                progress(seed, accuracy)
            return accuracy

        with ThreadPoolExecutor(max_workers=options.workers + 1) as pool:  # as grade.grade: one waits for a slot
            accuracies = list(pool.map(one, range(seeds)))
    finally:
        grader.close()
    threshold, margin = recommend(accuracies)
    return Calibration(tuple(accuracies), margin, threshold)
