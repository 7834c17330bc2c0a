"""Tiny fine-tuning configs for the tests: labelled splits in a folder, 1-layer models."""

from pathlib import Path

from nlp_ssl.config import from_dict
from tests.helpers import make_reviews, write_jsonl


def write_sentiment_folder(root: Path, labels=("negative", "positive"), sizes=(400, 120, 120), as_ids=True) -> Path:
    """``train/validation/test.jsonl`` laid out like the data mirror; labels as ids by default."""
    for split, n, seed in zip(("train", "validation", "test"), sizes, (0, 1, 2)):
        rows = make_reviews(n, seed=seed, labels=labels)
        if as_ids:
            rows = [{"text": r["text"], "label": labels.index(r["label"])} for r in rows]
        write_jsonl(root / f"{split}.jsonl", rows)
    return root


def sentiment_config(out: Path, init, data_dir: Path, labels=("negative", "positive"), *, data=None, **train):
    from nlp_ssl.tasks.classification import SentimentConfig

    train_cfg = {
        "epochs": 3,
        "micro_batch_size": 16,
        "lr": 3e-3,
        "tracker": "none",
        "log_every": 1,
        "warmup_ratio": 0.1,
    }
    train_cfg.update(train)
    data_cfg = {
        "train": {"name": str(data_dir), "split": "train"},
        "validation": {"name": str(data_dir), "split": "validation"},
        "test": {"name": str(data_dir), "split": "test"},
        "labels": list(labels),
        "max_length": 32,
    }
    data_cfg.update(data or {})
    return from_dict(
        SentimentConfig,
        {
            "output_dir": str(out),
            "task": "sentiment",
            "init": str(init),
            "data": data_cfg,
            "dropout": 0.0,
            "train": train_cfg,
            "seed": 0,
        },
    )


def write_translation_folder(root: Path, sizes=(300, 40, 40)) -> Path:
    """``{"translation": {"en", "xx"}}`` pairs where "xx" is the English words in reverse order:
    a task a tiny encoder-decoder starts to learn in a few dozen steps."""
    import random

    from tests.helpers import WORDS

    for split, n, seed in zip(("train", "validation", "test"), sizes, (0, 1, 2)):
        rng = random.Random(seed)
        rows = []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
            rows.append({"translation": {"en": " ".join(words), "xx": " ".join(reversed(words))}})
        write_jsonl(root / f"{split}.jsonl", rows)
    return root


def translation_config(out: Path, encoder, decoder, data_dir: Path, *, data=None, **top):
    from nlp_ssl.tasks.seq2seq import TranslationConfig

    data_cfg = {
        "train": {"name": str(data_dir), "split": "train"},
        "validation": {"name": str(data_dir), "split": "validation"},
        "test": {"name": str(data_dir), "split": "test"},
        "source_lang": "en",
        "target_lang": "xx",
        "max_source_length": 32,
        "max_target_length": 24,
    }
    data_cfg.update(data or {})
    raw = {
        "output_dir": str(out),
        "task": "translation",
        "init": str(encoder),
        "init_decoder": None if decoder is None else str(decoder),
        "data": data_cfg,
        "dropout": 0.0,
        "generation": {"max_new_tokens": 16, "num_beams": 2},
        "train": {
            "epochs": 4,
            "micro_batch_size": 16,
            "lr": 3e-3,
            "tracker": "none",
            "log_every": 1,
            "warmup_ratio": 0.1,
        },
        "seed": 0,
    }
    raw.update(top)
    return from_dict(TranslationConfig, raw)


def assert_regenerates_first_prediction(run_dir: Path, model_dir: Path, model=None) -> None:
    """The saved seq2seq folder, reloaded, generates the run's first recorded hypothesis."""
    import json

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    first = json.loads((run_dir / "predictions.jsonl").read_text().splitlines()[0])
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = model if model is not None else AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    generated = model.generate(**tok([first["source"]], return_tensors="pt"))
    assert tok.decode(generated[0], skip_special_tokens=True).strip() == first["hypothesis"]
