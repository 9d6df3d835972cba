"""What every dataset reader shares: the records it returns and the errors it raises for a bad directory.

A reader turns a dataset's public on-disk layout into file paths and strings; it never opens an image (the
runner streams them later), so reading even Flickr30k's 159k captions takes a second.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LAYOUT_DOC = "docs/benchmarks.md"


class DatasetLayoutError(ValueError):
    """A dataset directory that lacks a file or holds one that cannot be parsed; the message names the file
    and the expected layout."""


@dataclass(frozen=True)
class RetrievalSet:
    """Image files and captions; caption j describes image `caption_image[j]` (every image has at least one).

    protocol: one line saying what was read and whose evaluation it follows (printed with the results).
    """

    image_paths: list[Path]
    captions: list[str]
    caption_image: list[int]
    protocol: str


@dataclass(frozen=True)
class ClassificationSet:
    """Image files with class labels (indices into `classnames`, the names the prompts are built from).

    dataset: a known public dataset the folder was recognised as ("imagenet-1k"), used to pick published
    numbers; None otherwise.
    """

    image_paths: list[Path]
    labels: list[int]
    classnames: list[str]
    protocol: str
    dataset: str | None = None


class Layout:
    """Checks against one suite's expected layout; every error names the path and the layout."""

    def __init__(self, suite: str, root: str | Path, expected: str):
        self.suite = suite
        self.root = Path(root).expanduser()
        self.expected = expected

    def error(self, problem: str) -> DatasetLayoutError:
        """`DatasetLayoutError` for `problem`, with the expected layout appended."""
        return DatasetLayoutError(
            f"{self.suite}: {problem}; expected {self.expected} under --data {self.root} (see {LAYOUT_DOC})"
        )

    def directory(self, relative: str = "") -> Path:
        """root / relative, which must be a directory."""
        path = self.root / relative
        if not path.is_dir():
            raise self.error(f"no such directory {path}")
        return path

    def file(self, relative: str) -> Path:
        """root / relative, which must be a file."""
        path = self.root / relative
        if not path.is_file():
            raise self.error(f"no such file {path}")
        return path

    def json(self, relative: str):
        """The parsed JSON document at root / relative."""
        path = self.file(relative)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise self.error(f"{path} is not valid JSON ({e})") from e

    def images_exist(self, paths: Sequence[Path]) -> None:
        """Fail before any encoding if an image the annotations name is not on disk."""
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise self.error(f"{len(missing)} of {len(paths)} images are missing, the first is {missing[0]}")

    def field(self, record: dict, key: str, where: str):
        """record[key], or an error naming `where` (file and line or item) when it is absent."""
        if not isinstance(record, dict) or key not in record:
            raise self.error(f"{where} has no {key!r} field")
        return record[key]
