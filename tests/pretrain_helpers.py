"""Tiny pretraining configs for the tests: 1 layer, hidden 32, blocks of 32 tokens."""

from pathlib import Path

from nlp_ssl.config import from_dict


def tiny_config(out: Path, tokenizer: Path, corpus: Path, objective: str = "mlm", *, data=None, **train):
    from nlp_ssl.pretrain import recipe_class

    train_cfg = {
        "max_steps": 12,
        "micro_batch_size": 8,
        "lr": 3e-3,
        "eval_every": 6,
        "log_every": 1,
        "save_every": 4,
        "tracker": "none",
        "warmup_steps": 2,
    }
    train_cfg.update(train)
    raw = {
        "output_dir": str(out),
        "tokenizer": str(tokenizer),
        "objective": objective,
        "data": {
            "datasets": [{"files": str(corpus)}],
            "block_size": 32,
            "validation_fraction": 0.1,
            "cache_dir": str(out.parent / "cache"),
            **(data or {}),
        },
        "model": {"preset": "tiny", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 64},
        "train": train_cfg,
        "seed": 1,
    }
    return from_dict(recipe_class(raw, "tiny_config"), raw)
