#!/usr/bin/env python
"""Every DICOM file shipped by ``pydicom`` and ``pydicom-data``: read (and at what size), or refused
with its reason. ``python benchmarks/dicom_corpus.py [--out benchmarks/results/dicom-corpus.md]``.

Each file is read by :func:`medmoe.io.read_image` as ``medmoe detect --frame middle`` reads it
(``--frame``: another policy; without one, multi-frame files are refused by design); a failure that is not an :class:`~medmoe.errors.ImageReadError` is a bug and is
counted separately (exit code 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def corpus() -> list[Path]:
    """The ``.dcm`` files (and extension-less DICOM test files) of both packages, sorted."""
    import pydicom

    folders = [Path(pydicom.__file__).parent / "data" / "test_files"]
    import data_store  # the module of the pydicom-data package

    folders.append(Path(data_store.__file__).parent / "data")
    found: set[Path] = set()
    for folder in folders:
        found |= {p for p in folder.rglob("*") if p.is_file()}
    from medmoe.io.formats import image_format

    return sorted(p for p in found if image_format(p) == "dicom")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--frame", default="middle", help="frame policy of multi-frame files (as --frame of detect)")
    args = parser.parse_args(argv)

    from medmoe.atomic import atomic_write_text
    from medmoe.errors import ImageReadError
    from medmoe.io import read_image
    from medmoe.io.choice import parse_choice
    from medmoe.report.tables import markdown_table

    rows, bugs = [], 0
    for path in corpus():
        try:
            image = read_image(path, frame=parse_choice(args.frame))
            outcome, reason = "read", "×".join(map(str, image.shape))
        except ImageReadError as exc:
            outcome, reason = "refused", exc.reason
        except Exception as exc:  # noqa: BLE001 - the point is to find these
            outcome, reason, bugs = "BUG", f"{type(exc).__name__}: {exc}", bugs + 1
        rows.append({"file": path.name, "outcome": outcome, "reason": " ".join(reason.split()).replace("|", "/")[:160]})
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("read", "refused", "BUG")}
    text = (f"# DICOM files of pydicom and pydicom-data\n\n`python benchmarks/dicom_corpus.py`: {len(rows)} files; "
            f"read {counts['read']}, refused {counts['refused']}, unexplained failures {counts['BUG']} "
            f"(multi-frame files read with --frame {args.frame}).\n\n"
            + markdown_table(rows, [("file", "file", ""), ("outcome", "outcome", ""), ("reason", "size or reason", "")])
            + "\n")
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
