"""The skip-gram stage vs. gensim alone on the same token ids and settings (and a torch kernel).

Baselines, in the same script run:
- ``gensim corpus_file``: what a user would write by hand for speed: the token ids written once
  to a text file (one document a line) and ``Word2Vec(corpus_file=...)``, gensim's fastest
  multi-threaded path (no Python in the loop);
- ``gensim iterable``: ``Word2Vec(sentences=<lists in memory>)``;
- ``nlp-ssl``: ``nlp-ssl pretrain`` with ``objective: skipgram`` (cached tokenization, progress,
  per-epoch checkpoints, logs), timed over its training epochs (its own ``train_seconds``; the
  gensim baselines' training is timed apart from their vocabulary pass, the same way) and as a
  whole command;
- ``--torch``: the skip-gram negative-sampling step written in torch (embedding gathers, a
  batched dot product, sparse gradients, SGD) at the batch size that was fastest, to show what
  running the objective on our engine would give (tokens/s of the kernel alone, an upper bound).

Every figure is tokens/s over the corpus tokens (before subsampling), as gensim counts them.

    python benchmarks/bench_embeddings.py [--epochs 5] [--torch]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from harness import REPO  # first: the repository on the import path, offline defaults

from nlp_ssl import pretrain
from nlp_ssl.config import load_recipe
from nlp_ssl.objectives import word2vec
from nlp_ssl.tokenizer import load_tokenizer


def gensim_settings(cfg) -> dict:
    m, t = cfg.model, cfg.train
    return dict(
        vector_size=m.dim,
        window=m.window,
        negative=m.negative,
        ns_exponent=m.ns_exponent,
        sample=m.sample,
        min_count=m.min_count,
        sg=1,
        hs=0,
        workers=t.workers,
        seed=cfg.seed,
        alpha=t.lr,
        min_alpha=t.min_lr,
        epochs=t.epochs,
    )


def torch_kernel(corpus_ids, dim: int, window: int, negative: int, seconds: float = 20.0) -> dict:
    """Tokens/s of a torch skip-gram step (pairs from dynamic windows, as word2vec), no data
    loading counted: the ceiling of a torch implementation on this CPU."""
    import numpy as np
    import torch

    flat = np.concatenate(corpus_ids[:2000]).astype(np.int64)
    vocab = int(flat.max()) + 1
    rng = np.random.default_rng(0)
    best = {}
    for batch_tokens in (256, 1024, 4096):
        w_in = torch.nn.Embedding(vocab, dim, sparse=True)
        w_out = torch.nn.Embedding(vocab, dim, sparse=True)
        opt = torch.optim.SGD(list(w_in.parameters()) + list(w_out.parameters()), lr=0.025)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            pos = rng.integers(window, len(flat) - window, batch_tokens)
            reach = rng.integers(1, window + 1, batch_tokens)  # word2vec's shrunk window: ~window pairs a token
            offsets = np.concatenate([np.arange(-r, r + 1)[np.arange(-r, r + 1) != 0] for r in reach])
            centre = np.repeat(pos, 2 * reach)
            context = flat[centre + offsets]
            centre = torch.from_numpy(flat[centre])
            targets = torch.cat(
                [torch.from_numpy(context)[:, None], torch.randint(0, vocab, (len(context), negative))], dim=1
            )
            scores = torch.einsum("bd,bkd->bk", w_in(centre), w_out(targets))
            sign = torch.ones_like(scores)
            sign[:, 1:] = -1
            loss = -torch.nn.functional.logsigmoid(sign * scores).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += batch_tokens
        best[batch_tokens] = done / (time.perf_counter() - start)
    size = max(best, key=best.get)
    return {
        "tokens_per_second": round(best[size]),
        "batch_tokens": size,
        "by_batch": {k: round(v) for k, v in best.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(REPO / "recipes/pretrain/skipgram_imdb.yaml"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--torch", action="store_true", help="also time a torch skip-gram kernel")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    from gensim.models import Word2Vec

    results = {"host": os.uname().nodename, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_recipe(
            pretrain.recipe_class,
            args.recipe,
            [f"output_dir={tmp}/run", f"train.epochs={args.epochs}", "train.tracker=none"],
        )
        tokenizer = load_tokenizer(cfg.tokenizer)
        corpus = word2vec.load_corpus(cfg, tokenizer)  # tokenized once here; cached for the stage
        sentences = list(corpus)
        path = Path(tmp) / "corpus.txt"
        path.write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
        n_tokens = sum(len(s) for s in sentences)
        results["corpus_tokens"] = n_tokens
        results["settings"] = gensim_settings(cfg)

        def timed(**source) -> dict:
            """Vocabulary and training timed apart: the stage's tokens/s counts training only."""
            model = Word2Vec(**gensim_settings(cfg))
            start = time.perf_counter()
            model.build_vocab(**source)
            vocab = time.perf_counter() - start
            start = time.perf_counter()
            if "corpus_file" in source:
                model.train(corpus_file=source["corpus_file"], total_words=model.corpus_total_words, epochs=args.epochs)
            else:
                model.train(source["corpus_iterable"], total_examples=model.corpus_count, epochs=args.epochs)
            seconds = time.perf_counter() - start
            return {
                "vocab_seconds": round(vocab, 2),
                "seconds": round(seconds, 2),
                "wall_seconds": round(vocab + seconds, 2),
                "tokens_per_second": round(args.epochs * n_tokens / seconds),
            }

        results["gensim_corpus_file"] = timed(corpus_file=str(path))
        results["gensim_iterable"] = timed(corpus_iterable=sentences)
        del sentences

        start = time.perf_counter()
        metrics = pretrain.run(cfg)
        wall = time.perf_counter() - start
        results["nlp_ssl"] = {
            "seconds": metrics["train_seconds"],
            "wall_seconds": round(wall, 2),
            "tokens_per_second": metrics["tokens_per_s"],
        }
        base = results["gensim_corpus_file"]["tokens_per_second"]
        results["ratio_vs_gensim_corpus_file"] = round(metrics["tokens_per_s"] / base, 3)
        results["ratio_vs_gensim_iterable"] = round(
            metrics["tokens_per_s"] / results["gensim_iterable"]["tokens_per_second"], 3
        )
        # the whole command (tokenization cache, vocabulary, checkpoints, saving) against gensim's
        # vocabulary + training on text already tokenized
        results["wall_ratio_vs_gensim_corpus_file"] = round(results["gensim_corpus_file"]["wall_seconds"] / wall, 3)
        if args.torch:
            ids = [batch for split in corpus.splits for batch in split["input_ids"]]
            results["torch_kernel"] = torch_kernel(ids, cfg.model.dim, cfg.model.window, cfg.model.negative)
            results["ratio_torch_vs_gensim_corpus_file"] = round(results["torch_kernel"]["tokens_per_second"] / base, 3)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
