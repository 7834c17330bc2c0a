"""Screen: where beam-search evaluation time goes, batch order and batch size.

One fine-tuned encoder-decoder, its saved generation settings (beams, ``max_new_tokens``), the
Multi30k test sources; ``model.generate`` under ``torch.inference_mode`` over batches that are
- in file order (what the ``Seq2SeqTrainer`` evaluates with ``predict_with_generate``), or
- sorted longest source first (what the engine's evaluation does),
at several batch sizes. Prints sentences/s and corpus BLEU of each setting (the outputs should
agree whatever the batching, up to ties broken by padded arithmetic).

    python benchmarks/ablations/generation_batching.py runs/study-translation-embeddings/finetune-sg-all-s0/model \
        --batch-sizes 8 16 32 64 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NLP_SSL_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nlp_ssl.data import DatasetSpec, load_split  # noqa: E402


def main() -> None:
    import sacrebleu
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 64, 128])
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()

    rows = load_split(DatasetSpec(name="bentrevett/multi30k", split="test", max_rows=args.rows))
    sources = [r["translation"]["en"] for r in rows]
    references = [r["translation"]["de"] for r in rows]
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(args.model)).eval()
    ids = tokenizer(sources, truncation=True, max_length=args.max_length)["input_ids"]
    lengths = np.array([len(i) for i in ids])
    with torch.inference_mode():  # one untimed batch: one-time costs do not land on the first setting
        model.generate(**tokenizer.pad({"input_ids": ids[:8]}, return_tensors="pt"))
    results = []
    settings = [("file order", bs) for bs in args.batch_sizes] + [("longest first", bs) for bs in args.batch_sizes]
    for order_name, size in settings:
        order = np.arange(len(ids)) if order_name == "file order" else np.argsort(-lengths, kind="stable")
        outputs: list[str | None] = [None] * len(ids)
        steps = 0
        start = time.perf_counter()
        with torch.inference_mode():
            for at in range(0, len(order), size):
                chunk = order[at : at + size]
                batch = tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt")
                generated = model.generate(**batch)
                steps += generated.shape[1]
                for i, text in zip(chunk, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                    outputs[i] = text.strip()
        seconds = time.perf_counter() - start
        bleu = sacrebleu.corpus_bleu(outputs, [references]).score
        results.append(
            {
                "order": order_name,
                "batch_size": size,
                "seconds": round(seconds, 2),
                "sentences_per_s": round(len(ids) / seconds, 1),
                "decoder_steps": steps,
                "bleu": round(bleu, 2),
            }
        )
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
