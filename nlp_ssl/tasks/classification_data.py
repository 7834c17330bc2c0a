"""Labelled text for classification: label sets (checked and mapped to ids), splits
encoded once with ``datasets.map`` and cached, and the class-balanced few-label subsample."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nlp_ssl.data import DatasetSpec, column_texts, load_split, missing_column, resolve
from nlp_ssl.errors import ConfigError, DataError


@dataclass
class LabelSet:
    """Label names in id order; ids are what the model predicts."""

    names: list[str]

    @classmethod
    def of(cls, model) -> LabelSet:
        """The labels a saved classifier predicts, from its config."""
        return cls([model.config.id2label[i] for i in range(model.config.num_labels)])

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def to_ids(self, values: list, rows, where: str) -> list[int]:
        """Map a column of labels (ids or names) to ids, naming the first bad row."""
        lookup = self.label2id
        ids = []
        for row, value in zip(rows, values):
            value = _whole(value)
            if value is None:
                raise DataError(f"{where}: row {row}: label is missing (a blank cell or null)")
            if isinstance(value, (bool, np.bool_)):
                value = int(value)
            if isinstance(value, (int, np.integer)):
                if not 0 <= value < len(self.names):
                    raise DataError(
                        f"{where}: row {row}: label {value} is out of range (expected 0..{len(self.names) - 1}: "
                        f"{', '.join(self.names)})"
                    )
                ids.append(int(value))
            elif isinstance(value, str) and value in lookup:
                ids.append(lookup[value])
            else:
                raise DataError(f"{where}: row {row}: label {value!r} is not one of: {', '.join(self.names)}")
        return ids


def _whole(value):
    """A label as written: a CSV column with a blank cell loads as floats (``1.0``, and NaN for
    the blank), which are the ids ``1`` and missing."""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return int(value)
    return value


def infer_labels(ds, column: str, where: str) -> LabelSet:
    """Label names from the data: a ``ClassLabel`` feature's names, ``0..max`` for integer
    labels, or the sorted distinct strings."""
    from datasets import ClassLabel

    feature = ds.features.get(column)
    if isinstance(feature, ClassLabel):
        return LabelSet(list(feature.names))
    values = [v for v in map(_whole, ds[column]) if v is not None]
    if not values:
        raise DataError(f"{where}: column {column!r} holds no labels")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        low, high = min(values), max(values)
        if low < 0:
            raise DataError(
                f"{where}: label {low} is negative; integer labels must be 0..K-1 "
                "(an unlabeled split, such as GLUE test, cannot be used for training or scoring)"
            )
        return LabelSet([str(i) for i in range(high + 1)])
    return LabelSet(sorted({str(v) for v in values}))


def tokenize_labelled(
    spec: DatasetSpec,
    encode: Callable[[list[list[str]]], dict],
    labels: LabelSet | None,
    label_column: str,
    num_proc: int | None = None,
):
    """Load a split, check text and label columns, and encode it (``datasets.map``, cached).

    ``encode`` takes a batch of texts, one list per text column, and returns new columns
    (``Windows.encode``: the token windows; a classical head: the text itself). Returns the
    dataset (original columns kept, plus those and ``label_id``) and the label set (inferred
    when ``labels`` is None).
    """
    source = resolve(spec)
    ds = load_split(spec, source)
    where = f"dataset {source.label}"
    columns = spec.text_columns
    if len(columns) > 2:
        raise ConfigError(f"{where}: 'text_column' takes one column, or two for sentence pairs; got {columns}")
    for column in columns + [label_column]:
        if column.split(".")[0] not in ds.column_names:
            raise missing_column(where, column, ds.column_names, "label column" if column == label_column else "column")
    if labels is None:
        labels = infer_labels(ds, label_column, where)

    def encode_rows(batch, indices):
        texts = [column_texts(batch, c, spec, source.label, rows=indices) for c in columns]
        enc = dict(encode(texts))
        enc["label_id"] = labels.to_ids(batch[label_column], indices, where)
        return dict(enc)

    ds = ds.map(encode_rows, batched=True, with_indices=True, num_proc=num_proc, desc=f"tokenizing {spec.describe()}")
    return ds, labels


def balanced_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` example indices with the classes as equally represented as the data allows.

    Seeded; a smaller ``n`` with the same seed picks a subset of a larger one (each class
    is read in one fixed shuffled order), so learning curves add labels rather than swap them.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 0xBA1])
    classes = np.unique(labels)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    quota = {c: n // len(classes) for c in classes}
    for c in rng.permutation(classes)[: n % len(classes)]:
        quota[c] += 1
    take = {c: min(quota[c], len(pools[c])) for c in classes}
    short = n - sum(take.values())
    while short > 0:  # a class ran out: the others fill in, one at a time
        for c in classes:
            if short and take[c] < len(pools[c]):
                take[c] += 1
                short -= 1
    return np.sort(np.concatenate([pools[c][: take[c]] for c in classes]))
