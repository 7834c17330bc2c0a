"""What the fine-tuning tasks share: tokenized ``datasets`` splits read by row."""

from __future__ import annotations

import numpy as np

from nlp_ssl.errors import ConfigError


class TokenizedSplits:
    """Splits (``train``, ``eval``, ``test``) of tokenized examples, each read through an index
    (the training index may be a subsample), and the untouched rows for prediction records."""

    def init_splits(self, splits: dict, columns: list[str], train_index=None) -> None:
        self.texts = splits
        """The full rows (original columns kept), for predictions.jsonl."""
        self.splits = {name: ds.select_columns([c for c in columns if c in ds.column_names])
                       for name, ds in splits.items()}
        self.index = {name: np.arange(len(ds)) for name, ds in splits.items()}
        if train_index is not None:
            self.index["train"] = np.asarray(train_index)
        self.n_train = len(self.index["train"]) if "train" in splits else 0

    def eval_indices(self, split: str = "eval") -> np.ndarray:
        if split not in self.splits:
            raise ConfigError(f"no {split!r} split to evaluate")
        return np.arange(len(self.index[split]))

    def examples(self, split: str, indices) -> tuple[np.ndarray, list[dict]]:
        """Dataset rows for positions ``indices`` of a split, as one dict per example."""
        rows = self.index[split][np.asarray(indices)]
        features = self.splits[split][rows.tolist()]
        return rows, [{k: features[k][i] for k in features} for i in range(len(rows))]

    def source_rows(self, split: str, outputs: dict) -> list[dict]:
        """The original rows behind gathered evaluation outputs, in their order."""
        ds = self.texts[split]
        return [ds[int(r)] for r in self.index[split][outputs["index"]]]
