"""Public benchmarks the long-text CLIP papers report, read from local copies in their public layouts.

layout.py         records a reader returns (RetrievalSet, ClassificationSet) and DatasetLayoutError
long_caption.py   Urban1k, ShareGPT4V-1k, DCI, DOCCI readers        short_caption.py  COCO, Flickr30k readers
image_folder.py   zero-shot class-folder reader                      registry.py       SUITES: name -> Suite
encoding.py       streamed image files, captions under a truncation policy
retrieval.py      blockwise recall@k (both directions)               zeroshot.py       prompt-ensemble classifier
runner.py         run_benchmark -> BenchmarkResult                    published.py      published.json rows
plot.py           bar chart of a suite's results
"""

from vision_long.eval.suites.layout import ClassificationSet, DatasetLayoutError, RetrievalSet
from vision_long.eval.suites.registry import SUITES, Suite
from vision_long.eval.suites.runner import BenchmarkResult, run_benchmark

__all__ = [
    "SUITES",
    "BenchmarkResult",
    "ClassificationSet",
    "DatasetLayoutError",
    "RetrievalSet",
    "Suite",
    "run_benchmark",
]
