"""`run_benchmark`: read a suite's dataset from disk, run its task through an `Encoder`, time it, record how."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vision_long.encoders.base import Encoder
from vision_long.eval.suites.registry import SUITES
from vision_long.eval.suites.retrieval import evaluate_retrieval
from vision_long.eval.suites.zeroshot import evaluate_zeroshot

TASKS = {"retrieval": evaluate_retrieval, "zeroshot": evaluate_zeroshot}


@dataclass
class BenchmarkResult:
    """One model on one suite. `metrics` are percentages keyed like the papers' columns: "i2t_r1", "t2i_r1",
    ... for retrieval, "top1"/"top5" for zero-shot; `counts` has n_images, n_texts, n_truncated (and
    n_classes)."""

    suite: str
    split: str | None
    protocol: str
    truncate: bool
    context_length: int
    metrics: dict[str, float]
    counts: dict[str, int]
    seconds: float
    dataset: str | None = None  # a recognised public dataset (zero-shot folders), for published numbers

    def as_record(self) -> dict:
        """One flat JSON-ready dict: settings, counts, then the metrics (unit: percent)."""
        record = {k: v for k, v in asdict(self).items() if k not in ("metrics", "counts")}
        return {**record, **self.counts, "unit": "percent", **self.metrics}


def run_benchmark(
    suite: str,
    model: Encoder,
    data_dir: str | Path,
    split: str | None = None,
    truncate: bool = True,
    batch_size: int = 128,
    workers: int = 0,
    progress: bool = False,
) -> BenchmarkResult:
    """Evaluate `model` on suite `suite` (a key of `SUITES`) read from `data_dir` in its public layout.

    truncate: cut captions longer than the model's context (the papers' protocol) or refuse them.
    workers: processes decoding images (0: decode in this process).
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    spec = SUITES[suite]
    if split is not None and split not in spec.splits:
        choices = ", ".join(spec.splits) if spec.splits else "none"
        raise ValueError(f"{suite} has no split {split!r} (splits: {choices})")
    start = time.perf_counter()
    data = spec.read(Path(data_dir), split)
    metrics, counts = TASKS[spec.task](model, data, batch_size, truncate, workers, progress)
    return BenchmarkResult(
        suite=suite,
        split=split or (spec.splits[0] if spec.splits else None),
        protocol=data.protocol,
        truncate=truncate,
        context_length=model.context_length,
        metrics={key: 100.0 * value for key, value in metrics.items()},
        counts=counts,
        seconds=round(time.perf_counter() - start, 1),
        dataset=getattr(data, "dataset", None),
    )
