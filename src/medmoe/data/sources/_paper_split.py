"""The papers' split files (``splits/data.json`` of DDAD / DDAD-ASR) and how their entries become rows.

A split file is a JSON tree whose leaves are lists of bare file names::

    {"train": {"0": [...], "unlabeled": {"0": [...], "1": [...]}},
     "test": {"0": [...], "1": [...]}}

``0`` is normal, ``1`` abnormal. medmoe uses ``train/0`` (training normals), ``test/0`` and ``test/1``;
the ``unlabeled`` lists (semi-supervised settings) are not used, but entries of theirs that do not
resolve are still reported, separately.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from medmoe.data.manifest import Sample
from medmoe.data.sources._base import Layout, Source, report_problems

USED_LISTS: dict[str, tuple[str, int]] = {"train/0": ("train", 0), "test/0": ("test", 0), "test/1": ("test", 1)}

Resolver = Callable[[str, int], tuple[str, str] | None]
"""Maps (bare name, label) to (path relative to the root, subclass), or ``None`` if the name breaks the rule."""


def read_split_file(source: Source, root: Path, relative_path: str = "splits/data.json") -> dict[str, list[str]]:
    """The lists of a split file, keyed by their path in the tree (``"train/unlabeled/0"``).

    Raises:
        DatasetError: the file is missing, not JSON, or lacks one of the used lists.
    """
    path = root / relative_path
    if not path.is_file():
        raise source.layout_error(root, f"no split file {relative_path}")
    try:
        tree = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise source.layout_error(root, f"{relative_path} is not readable JSON ({exc})") from exc
    lists: dict[str, list[str]] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, list) and all(isinstance(n, str) for n in node):
            lists[prefix] = node
        else:
            raise source.layout_error(root, f"{relative_path}: '{prefix}' is neither a mapping nor a list of names")

    walk(tree, "")
    missing = [key for key in USED_LISTS if key not in lists]
    if missing:
        raise source.layout_error(root, f"{relative_path} lacks the list(s) {', '.join(missing)}")
    return lists


def paper_split_layout(root: Path, lists: dict[str, list[str]], resolve: Resolver, task: str) -> Layout:
    """Rows for the used lists of a split file; entries that do not resolve to a file are reported.

    Args:
        root: the dataset root.
        lists: as returned by :func:`read_split_file`.
        resolve: name rule of the layout.
        task: task id of the rows.

    Returns:
        the rows, with ``unresolved`` (used lists) and ``unresolved_unused`` (other lists) in the meta,
        each with a ``*_names`` list of ``list:name`` entries.
    """
    samples: list[Sample] = []
    unresolved: list[str] = []
    unresolved_unused: list[str] = []
    for key, names in lists.items():
        split_label = USED_LISTS.get(key)
        label = split_label[1] if split_label else int(key.rsplit("/", 1)[-1] == "1")
        for name in names:
            found = resolve(name, label)
            if found is None or not (root / found[0]).is_file():
                (unresolved if split_label else unresolved_unused).append(f"{key}:{name}")
            elif split_label:
                samples.append(Sample(path=found[0], task=task, label=label, split=split_label[0],
                                      subclass=found[1]))
    meta = {"split": "paper (splits/data.json)"}
    report_problems(meta, "unresolved", unresolved)
    report_problems(meta, "unresolved_unused", unresolved_unused)
    return Layout(samples=samples, meta=meta)
