"""Every kind of bad input the stages and commands accept, in one table: each exits non-zero
with one ``error:`` line naming the file, line, row or key, and leaves no output behind."""

import shutil
from pathlib import Path

import pytest
import yaml

from nlp_ssl.cli import main
from tests.helpers import hashes, make_reviews, write_jsonl


def recipe(tmp: Path, data: dict) -> str:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def tokenizer_recipe(tmp, files, **extra):
    return recipe(
        tmp, {"output_dir": str(tmp / "out"), "vocab_size": 300, "datasets": [{"files": str(files)}], **extra}
    )


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def pretrain_raw(ctx, **changes) -> dict:
    raw = {
        "output_dir": str(ctx.tmp / "out"),
        "tokenizer": str(ctx.tokenizer),
        "objective": "mlm",
        "data": {"datasets": [{"files": str(ctx.corpus)}], "block_size": 32, "validation_fraction": 0.1},
        "model": {"preset": "tiny", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 64},
        "train": {"max_steps": 2, "micro_batch_size": 4, "tracker": "none"},
    }
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return raw


def sentiment_raw(ctx, data_dir=None, **changes) -> dict:
    data_dir = data_dir or ctx.sentiment
    raw = {
        "output_dir": str(ctx.tmp / "out"),
        "task": "sentiment",
        "init": str(ctx.mlm),
        "data": {
            "train": {"name": str(data_dir), "split": "train"},
            "validation": {"name": str(data_dir), "split": "validation"},
            "labels": ["negative", "positive"],
            "max_length": 32,
        },
        "train": {"epochs": 1, "tracker": "none"},
    }
    raw.update(changes)
    return raw


def labelled_folder(ctx, rows_train) -> Path:
    folder = ctx.tmp / "labelled"
    write_jsonl(folder / "train.jsonl", rows_train)
    write_jsonl(folder / "validation.jsonl", [{"text": r["text"], "label": 0} for r in make_reviews(8, seed=1)])
    return folder


def copy_run(ctx, where: str) -> Path:
    """A copy of the fine-tuned run (a case that could delete it must not touch the shared one)."""
    target = ctx.tmp / where
    shutil.copytree(ctx.finetuned, target)
    return target


def translation_raw(ctx) -> dict:
    pairs = write_jsonl(ctx.tmp / "mt.jsonl", [{"translation": {"en": "a b", "de": "b a"}}] * 8)
    return {
        "output_dir": str(ctx.tmp / "out"),
        "task": "translation",
        "init": str(ctx.mlm),
        "init_decoder": str(ctx.clm),
        "data": {
            "train": {"files": str(pairs)},
            "source_lang": "en",
            "target_lang": "de",
            "max_source_length": 32,
            "max_target_length": 32,
        },
        "train": {"epochs": 1, "tracker": "none"},
    }


def baseline_raw(ctx, **changes) -> dict:
    data = {k: v for k, v in sentiment_raw(ctx)["data"].items() if k != "max_length"}
    return {"output_dir": str(ctx.tmp / "out"), "data": data, "C": [1.0], **changes}


def user_folder(ctx, name: str = "mine") -> Path:
    """A folder of someone's own files, which no --overwrite may replace."""
    folder = ctx.tmp / name
    folder.mkdir(exist_ok=True)
    (folder / "thesis.tex").write_text("years of work")
    return folder


def finished_tokenizer(ctx, name: str = "tok-run") -> Path:
    out = ctx.tmp / name
    assert main(["tokenizer", tokenizer_recipe(ctx.tmp, ctx.corpus), f"output_dir={out}"]) == 0
    return out


def repository(ctx) -> Path:
    repo = finished_tokenizer(ctx, "repo")
    (repo / ".git").mkdir()
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return repo


def interrupted_run(ctx) -> Path:
    """A copy of the pretraining run as a crash after its last checkpoint leaves it."""
    run = ctx.tmp / "interrupted"
    shutil.copytree(ctx.mlm, run)
    for name in ("metrics.json", "run_info.json"):
        (run / name).unlink()
    shutil.rmtree(run / "model")
    return run


def two_sections(ctx) -> str:
    text = yaml.safe_dump(pretrain_raw(ctx), sort_keys=False) + "train: {max_steps: 3}\n"
    return str(write(ctx.tmp / "twice.yaml", text.encode()))


def pipeline_recipe(ctx, **changes) -> str:
    stage = {k: v for k, v in sentiment_raw(ctx).items() if k != "output_dir"}
    return recipe(ctx.tmp, {"run_dir": str(ctx.tmp / "out"), "finetune": {"rt": stage}, **changes})


def csv_folder(ctx, header: str, rows: list[str], name: str = "csvdata") -> Path:
    """A labelled folder of ``train.csv`` / ``validation.csv`` written as given."""
    folder = ctx.tmp / name
    folder.mkdir()
    for split in ("train", "validation"):
        (folder / f"{split}.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def review_rows(sep=",") -> list[str]:
    return [f"{r['text'].replace(',', '')}{sep}{r['label']}" for r in reviews()]


def broken_gzip(ctx, name: str, truncated: bool = False) -> Path:
    import gzip

    whole = gzip.compress(b"text\n" + b"".join(f"line {i} of text\n".encode() for i in range(400)))
    data = whole[: len(whole) // 2] if truncated else whole[:10] + bytes(range(256)) * 4
    return write(ctx.tmp / name, data)


def model_with_bad_config(ctx) -> Path:
    broken = copy_run(ctx, "badconfig") / "model"
    (broken / "config.json").write_text('{"architectures": ["BertForSequenceClassification"], oops}')
    return broken


def model_without_tokenizer_json(ctx) -> Path:
    model = copy_run(ctx, "notok") / "model"
    (model / "tokenizer.json").unlink()
    return model


def skipgram_run(ctx) -> Path:
    out = ctx.tmp / "sg"
    assert (
        main(
            [
                "pretrain",
                recipe(
                    ctx.tmp,
                    {
                        "output_dir": str(out),
                        "objective": "skipgram",
                        "tokenizer": str(ctx.tokenizer),
                        "data": {"datasets": [{"files": str(ctx.corpus)}]},
                        "model": {"dim": 16, "min_count": 2},
                        "train": {"epochs": 1, "workers": 1, "tracker": "none"},
                    },
                ),
            ]
        )
        == 0
    )
    return out


def truncated_parquet(ctx) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = ctx.tmp / "pq"
    folder.mkdir()
    for split in ("train", "validation"):
        pq.write_table(
            pa.table({"text": [r["text"] for r in reviews()], "label": [r["label"] for r in reviews()]}),
            folder / f"{split}.parquet",
        )
    data = (folder / "train.parquet").read_bytes()
    (folder / "train.parquet").write_bytes(data[: len(data) // 2])
    return folder


def reviews(n=20):
    return [{"text": r["text"], "label": int(r["label"] == "positive")} for r in make_reviews(n, seed=0)]


def corrupt_copy(ctx) -> Path:
    broken = ctx.tmp / "broken"
    shutil.copytree(ctx.mlm / "model", broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    return broken


def no_mask_tokenizer(ctx) -> Path:
    """Anyone's tokenizer without a mask token (ours always have one), e.g. a GPT-2 style one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ctx.tokenizer)
    tok.mask_token = None
    tok.save_pretrained(ctx.tmp / "tok-no-mask")
    return ctx.tmp / "tok-no-mask"


def bigger_tokenizer(ctx) -> Path:
    out = ctx.tmp / "tok-400"
    assert main(["tokenizer", tokenizer_recipe(ctx.tmp, ctx.corpus), "vocab_size=400", f"output_dir={out}"]) == 0
    return out


# (id, argv builder, what the one error line must say)
CASES = [
    # -- text corpora (tokenizer; pretraining reads them the same way) -----------------------------
    (
        "empty corpus",
        lambda c: ["tokenizer", tokenizer_recipe(c.tmp, write(c.tmp / "e.txt", b""))],
        "split 'train' is empty",
    ),
    (
        "whitespace-only corpus",
        lambda c: ["tokenizer", tokenizer_recipe(c.tmp, write(c.tmp / "w.txt", b"  \n\n \t\n"))],
        "has 3 rows but no text (all empty or whitespace)",
    ),
    (
        "not UTF-8",
        lambda c: ["tokenizer", tokenizer_recipe(c.tmp, write(c.tmp / "l.txt", b"ok\ncaf\xe9\n"))],
        "l.txt: line 2: bytes are not valid UTF-8",
    ),
    (
        "JSONL line not JSON",
        lambda c: [
            "tokenizer",
            tokenizer_recipe(c.tmp, write(c.tmp / "b.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": oops}\n')),
        ],
        "b.jsonl: line 3: not valid JSON",
    ),
    (
        "missing text column",
        lambda c: ["tokenizer", tokenizer_recipe(c.tmp, write(c.tmp / "n.jsonl", b'{"body": "a"}\n'))],
        "no column 'text' (columns: body)",
    ),
    # -- recipes ----------------------------------------------------------------------------------------
    (
        "misspelt key",
        lambda c: ["tokenizer", recipe(c.tmp, {"output_dir": str(c.tmp / "out"), "vocab_sise": 300})],
        "unknown key 'vocab_sise'; did you mean 'vocab_size'?",
    ),
    ("wrong type", lambda c: ["tokenizer", tokenizer_recipe(c.tmp, c.corpus), "vocab_size=big"], "vocab_size"),
    (
        "misspelt override",
        lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c)), "train.lrr=0.1"],
        "unknown key 'train.lrr'; did you mean 'train.lr'?",
    ),
    ("not YAML", lambda c: ["tokenizer", str(write(c.tmp / "r.yaml", b"output_dir: [x\n"))], "not valid YAML"),
    ("recipe not found", lambda c: ["tokenizer", str(c.tmp / "nope.yaml")], "recipe file not found"),
    ("negative learning rate", lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c, **{"train.lr": -1e-3}))], "'lr'"),
    (
        "block larger than positions",
        lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c, **{"data.block_size": 128}))],
        "block_size",
    ),
    ("unknown stage name", lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, task="sentimnet"))], "task"),
    # -- tokenizers and checkpoints --------------------------------------------------------------------
    (
        "MLM with a tokenizer without mask token",
        lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c, tokenizer=str(no_mask_tokenizer(c))))],
        "has no mask token",
    ),
    (
        "tokenizer is not a tokenizer folder",
        lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c, tokenizer=str(c.tmp)))],
        "tokenizer",
    ),
    (
        "tokenizer/model vocab mismatch",
        lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c, tokenizer=str(bigger_tokenizer(c)), init=str(c.mlm)))],
        "tokenizer",
    ),
    (
        "checkpoint is not a model folder",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, init=str(c.tokenizer)))],
        "init",
    ),
    (
        "unreadable checkpoint",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, init=str(corrupt_copy(c))))],
        "broken: weights cannot be loaded",
    ),
    (
        "wrong architecture for the task",
        lambda c: ["evaluate", str(c.mlm), str(c.sentiment), "--split", "test"],
        "not a sequence classifier or an encoder-decoder",
    ),
    (
        "max_length beyond the model's positions",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, data={**sentiment_raw(c)["data"], "max_length": 512}))],
        "'data.max_length' (512) exceeds the 64 positions",
    ),
    # -- labelled data ------------------------------------------------------------------------------------
    (
        "label out of range",
        lambda c: [
            "finetune",
            recipe(c.tmp, sentiment_raw(c, labelled_folder(c, reviews()[:5] + [{"text": "odd", "label": 5}]))),
        ],
        "train.jsonl: row 5: label 5 is out of range (expected 0..1: negative, positive)",
    ),
    (
        "unknown label name",
        lambda c: [
            "finetune",
            recipe(c.tmp, sentiment_raw(c, labelled_folder(c, reviews()[:3] + [{"text": "odd", "label": "meh"}]))),
        ],
        "row 3: label 'meh' is not one of: negative, positive",
    ),
    (
        "missing label",
        lambda c: [
            "finetune",
            recipe(c.tmp, sentiment_raw(c, labelled_folder(c, reviews()[:2] + [{"text": "odd", "label": None}]))),
        ],
        "row 2: label is missing",
    ),
    (
        "missing label column",
        lambda c: [
            "finetune",
            recipe(c.tmp, sentiment_raw(c, labelled_folder(c, [{"text": r["text"], "stars": 1} for r in reviews()]))),
        ],
        "no label column 'label'",
    ),
    (
        "missing language key",
        lambda c: [
            "finetune",
            recipe(
                c.tmp,
                {
                    "output_dir": str(c.tmp / "out"),
                    "task": "translation",
                    "init": str(c.mlm),
                    "init_decoder": str(c.clm),
                    "data": {
                        "train": {
                            "files": str(
                                write_jsonl(
                                    c.tmp / "mt.jsonl",
                                    [{"translation": {"en": "a b", "de": "b a"}}] * 3 + [{"translation": {"en": "c"}}],
                                )
                            )
                        },
                        "source_lang": "en",
                        "target_lang": "de",
                        "max_source_length": 32,
                        "max_target_length": 32,
                    },
                    "train": {"epochs": 1, "tracker": "none"},
                },
            ),
        ],
        "row 3: column 'translation.de' is null, expected text",
    ),
    (
        "evaluation data without the text column",
        lambda c: [
            "evaluate",
            str(c.finetuned),
            str(labelled_folder(c, [{"txt": "a", "label": 0}])),
            "--split",
            "train",
        ],
        "no column 'text'",
    ),
    # -- output folders ---------------------------------------------------------------------------------------
    (
        "output_dir is a file",
        lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c, output_dir=str(write(c.tmp / "afile", b"x"))))],
        "is a file, not a folder",
    ),
    (
        "output_dir under a file",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, output_dir=str(write(c.tmp / "afile", b"x") / "run")))],
        "cannot be created: ",
    ),
    (
        "output_dir where nothing may be written",
        lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c, output_dir="/sys/nlp-ssl-out"))],
        "output_dir /sys/nlp-ssl-out cannot be",
    ),
    (
        "output_dir inside the checkpoint it starts from",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, output_dir=str(c.mlm / "ft"))), "--overwrite"],
        "is inside init",
    ),
    (
        "output_dir is the data folder",
        lambda c: [
            "finetune",
            recipe(c.tmp, sentiment_raw(c, labelled_folder(c, reviews()), output_dir=str(c.tmp / "labelled"))),
            "--overwrite",
        ],
        "is data.train.name",
    ),
    (
        "export over the run it exports",
        lambda c: ["export", str(copy_run(c, "par/ft")), str(c.tmp / "par"), "--overwrite"],
        "contains checkpoint",
    ),
    (
        "evaluate into the checkpoint",
        lambda c: ["evaluate", str(c.finetuned), str(c.sentiment), "--output-dir", str(c.finetuned / "eval")],
        "is inside checkpoint",
    ),
    # -- numbers out of range ---------------------------------------------------------------------------------
    (
        "infinite learning rate",
        lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c)), "train.lr=.inf"],
        "'train.lr' must be a finite number, got inf",
    ),
    (
        "Adam beta of 1",
        lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c)), "train.adam_beta2=1.0"],
        "'adam_beta2' must be in [0, 1), got 1.0",
    ),
    (
        "batch larger than the training set",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c)), "train.micro_batch_size=100000"],
        "exceeds the",
    ),
    (
        "evaluate with batch size 0",
        lambda c: ["evaluate", str(c.finetuned), str(c.sentiment), "--batch-size", "0"],
        "--batch-size must be >= 1, got 0",
    ),
    (
        "predict beyond the model's positions",
        lambda c: ["predict", str(c.finetuned), "good film", "--max-length", "4096"],
        "--max-length 4096 exceeds the 64 positions of the model",
    ),
    (
        "greedy decoding with a beam-search option",
        lambda c: [
            "finetune",
            recipe(c.tmp, translation_raw(c)),
            "generation.num_beams=1",
            "generation.early_stopping=true",
        ],
        "apply to beam search only",
    ),
    (
        "generation option transformers refuses",
        lambda c: ["finetune", recipe(c.tmp, translation_raw(c)), "generation.max_new_tokens=0"],
        "'max_new_tokens' and 'num_beams' must be >= 1",
    ),
    # -- commands and compositions -------------------------------------------------------------------------
    ("predict from a missing checkpoint", lambda c: ["predict", str(c.tmp / "nowhere"), "good film"], "nowhere"),
    (
        "export into its own run folder",
        lambda c: ["export", str(c.finetuned), str(c.finetuned / "out")],
        "lies inside the run",
    ),
    (
        "pipeline stage starting from nothing",
        lambda c: [
            "pipeline",
            recipe(
                c.tmp,
                {
                    "run_dir": str(c.tmp / "out"),
                    "finetune": {"rt": {k: v for k, v in sentiment_raw(c, init="mlm").items() if k != "output_dir"}},
                },
            ),
        ],
        "finetune.rt.init: 'mlm' is not a pretraining stage of this pipeline",
    ),
    (
        "TF-IDF arm on a translation study",
        lambda c: [
            "study",
            recipe(
                c.tmp,
                {
                    "run_dir": str(c.tmp / "out"),
                    "finetune": {"task": "translation"},
                    "arms": {"tfidf": {"method": "tfidf_logreg"}},
                },
            ),
        ],
        "arms.tfidf: tfidf_logreg is a sentiment",
    ),
    # -- paths that would become another folder (the working directory is a user's folder here) ------------
    (
        "empty output_dir override",
        lambda c: ["baseline", recipe(c.tmp, baseline_raw(c)), "output_dir=", "--overwrite"],
        "'output_dir' is empty, but it names a folder or file (an empty path would be the working directory)",
    ),
    (
        "blank output_dir in a recipe",
        lambda c: ["tokenizer", tokenizer_recipe(c.tmp, c.corpus, output_dir=" ")],
        "'output_dir' is empty",
    ),
    (
        "empty export folder",
        lambda c: ["export", str(copy_run(c, "ft")), "", "--overwrite"],
        "the export folder is empty; an empty path would be the working directory",
    ),
    (
        "empty evaluate --output-dir",
        lambda c: ["evaluate", str(c.finetuned), str(c.sentiment), "--output-dir", "", "--overwrite"],
        "--output-dir is empty",
    ),
    ("empty checkpoint to predict from", lambda c: ["predict", "", "good film"], "checkpoint is empty"),
    ("empty init", lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c)), "init="], "'init' is empty"),
    (
        "empty data file",
        lambda c: ["tokenizer", tokenizer_recipe(c.tmp, c.corpus), "datasets.0.files="],
        "'datasets.0.files' is empty",
    ),
    (
        "empty pipeline run_dir",
        lambda c: ["pipeline", pipeline_recipe(c), "run_dir=", "--overwrite"],
        "'run_dir' is empty",
    ),
    (
        "empty study run_dir",
        lambda c: [
            "study",
            recipe(
                c.tmp,
                {
                    "run_dir": "",
                    "finetune": {k: v for k, v in sentiment_raw(c).items() if k not in ("output_dir", "init")},
                    "arms": {"tfidf": {"method": "tfidf_logreg"}},
                },
            ),
        ],
        "'run_dir' is empty",
    ),
    (
        "--overwrite the working directory",
        lambda c: ["baseline", recipe(c.tmp, baseline_raw(c, output_dir=".")), "--overwrite"],
        "will not replace {cwd}: it is the working directory; choose a new folder",
    ),
    (
        "--overwrite a folder around the working directory",
        lambda c: ["tokenizer", tokenizer_recipe(c.tmp, c.corpus, output_dir=str(Path.cwd().parent)), "--overwrite"],
        "it is a folder that contains the working directory",
    ),
    (
        "--overwrite the home folder",
        lambda c: ["export", str(copy_run(c, "ft")), "~", "--overwrite"],
        "it is your home folder",
    ),
    (
        "--overwrite a repository",
        lambda c: ["tokenizer", tokenizer_recipe(c.tmp, c.corpus, output_dir=str(repository(c))), "--overwrite"],
        "it is a source repository",
    ),
    (
        "--overwrite someone's folder",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, output_dir=str(user_folder(c)))), "--overwrite"],
        "it is not an nlp-ssl output (it holds files nlp-ssl did not write)",
    ),
    (
        "--overwrite another stage's output",
        lambda c: ["baseline", recipe(c.tmp, baseline_raw(c, output_dir=str(finished_tokenizer(c)))), "--overwrite"],
        "it is an nlp-ssl tokenizer output, not a baseline one",
    ),
    (
        "--overwrite a training run with an evaluation",
        lambda c: [
            "evaluate",
            str(c.finetuned),
            str(c.sentiment),
            "--output-dir",
            str(copy_run(c, "ft")),
            "--overwrite",
        ],
        "it is an nlp-ssl finetune output, not an evaluate one",
    ),
    (
        "pipeline stage name that is a path",
        lambda c: [
            "pipeline",
            recipe(
                c.tmp,
                {
                    "run_dir": str(c.tmp / "out"),
                    "finetune": {
                        "x/../../../escaped": {k: v for k, v in sentiment_raw(c).items() if k != "output_dir"}
                    },
                },
            ),
        ],
        "finetune.x/../../../escaped: 'x/../../../escaped' is not a valid name",
    ),
    (
        "study arm name that is a path",
        lambda c: [
            "study",
            recipe(
                c.tmp,
                {
                    "run_dir": str(c.tmp / "out"),
                    "finetune": {k: v for k, v in sentiment_raw(c).items() if k not in ("output_dir", "init")},
                    "arms": {"../up": {"method": "tfidf_logreg"}},
                },
            ),
        ],
        "arms.../up: '../up' is not a valid name",
    ),
    # -- recipes that would drift silently ---------------------------------------------------------------
    (
        "the same section twice",
        lambda c: ["pretrain", two_sections(c)],
        "key 'train' appears twice in one mapping (lines 15 and 19); keep one",
    ),
    (
        "resume with a changed learning rate",
        lambda c: [
            "pretrain",
            str(interrupted_run(c) / "resolved_config.yaml"),
            f"output_dir={c.tmp / 'interrupted'}",
            "train.resume=latest",
            "train.lr=0.005",
        ],
        "the recipe differs from the one " + "{tmp}/interrupted was started with (train.lr: 0.003 -> 0.005)",
    ),
    (
        "max_steps beside epochs",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c)), "train.max_steps=5"],
        "'max_steps' (5) would be ignored: 'epochs' (1) sizes the run; set epochs: null (train.epochs=null) to train 5",
    ),
    (
        "max_steps beside fine-tuning's default epochs",
        lambda c: [
            "finetune",
            recipe(c.tmp, {**sentiment_raw(c), "train": {"max_steps": 5, "tracker": "none"}}),
        ],
        "'max_steps' (5) would be ignored: 'epochs' (3.0) sizes the run",
    ),
    # -- files that broke a library instead of being named -----------------------------------------------
    (
        "corrupt .jsonl.gz",
        lambda c: ["tokenizer", tokenizer_recipe(c.tmp, broken_gzip(c, "c.jsonl.gz"))],
        "c.jsonl.gz: compressed data is corrupt (",
    ),
    (
        "corrupt .csv.gz, streamed",
        lambda c: [
            "tokenizer",
            recipe(
                c.tmp,
                {
                    "output_dir": str(c.tmp / "out"),
                    "vocab_size": 300,
                    "datasets": [{"files": str(broken_gzip(c, "c.csv.gz")), "streaming": True}],
                },
            ),
        ],
        "c.csv.gz: compressed data is corrupt (",
    ),
    (
        "truncated .csv.gz, streamed into pretraining",
        lambda c: [
            "pretrain",
            recipe(
                c.tmp,
                pretrain_raw(
                    c,
                    **{
                        "data.datasets": [
                            {"files": str(broken_gzip(c, "t.csv.gz", truncated=True)), "streaming": True}
                        ],
                        "data.validation": [{"files": str(c.corpus)}],
                    },
                ),
            ),
        ],
        "t.csv.gz: compressed file is truncated",
    ),
    (
        "config.json not JSON, predict",
        lambda c: ["predict", str(model_with_bad_config(c)), "good film"],
        "checkpoint: {tmp}/badconfig/model/config.json: not valid JSON (line 1 column 54: ",
    ),
    (
        "config.json not JSON, evaluate",
        lambda c: ["evaluate", str(model_with_bad_config(c)), str(c.sentiment)],
        "badconfig/model/config.json: not valid JSON (line 1 column 54: ",
    ),
    (
        "config.json not JSON, export",
        lambda c: ["export", str(model_with_bad_config(c)), str(c.tmp / "out")],
        "badconfig/model/config.json: not valid JSON (line 1 column 54: ",
    ),
    (
        "config.json not JSON, fine-tuning from it",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, init=str(model_with_bad_config(c))))],
        "init: {tmp}/badconfig/model/config.json: not valid JSON",
    ),
    (
        "packed-block cache that cannot be written",
        lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c)), "data.cache_dir=/sys/nlp-ssl-cache"],
        "data.cache_dir /sys/nlp-ssl-cache: cannot hold the packed blocks (",
    ),
    # -- said vaguely before ----------------------------------------------------------------------------
    (
        "';'-separated .csv",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, csv_folder(c, "text;label", review_rows(";"))))],
        "no column 'text' (columns: text;label); the header looks ';'-separated, but .csv is read comma-separated",
    ),
    (
        "tab-separated .csv",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, csv_folder(c, "text\tlabel", review_rows("\t"))))],
        "the header looks tab-separated, but .csv is read comma-separated and .tsv tab-separated: name the file .tsv",
    ),
    (
        "header-only .csv",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, csv_folder(c, "text,label", [])))],
        "csvdata/train.csv: only a header line, no rows",
    ),
    (
        "blank label cell",
        lambda c: [
            "finetune",
            recipe(
                c.tmp,
                sentiment_raw(
                    c, csv_folder(c, "text,label", review_rows()[:7] + ["no label here,"] + review_rows()[7:])
                ),
            ),
        ],
        "train.csv: row 7: label is missing (a blank cell or null)",
    ),
    (
        "missing local data folder",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c)), "data.train.name=./nope"],
        "dataset './nope': local folder " + "{cwd}/nope does not exist",
    ),
    (
        "data file given as a dataset name",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c)), f"data.train.name={c.corpus}"],
        "is a file; name files with 'files: ",
    ),
    (
        "truncated parquet",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, truncated_parquet(c)))],
        "pq/train.parquet: not a readable Parquet file (truncated, or not Parquet: ",
    ),
    (
        "model folder without tokenizer.json",
        lambda c: ["predict", str(model_without_tokenizer_json(c)), "good"],
        "notok/model: tokenizer_config.json but no tokenizer.json (nor a vocab.txt, vocab.json or *.model)",
    ),
    (
        "skip-gram run as init",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, init=str(skipgram_run(c))))],
        "init: {tmp}/sg is a skipgram/cbow run (token vectors, not a transformer); give it as 'init_embeddings'",
    ),
    (
        "empty --file",
        lambda c: ["predict", str(c.finetuned), "--file", str(write(c.tmp / "none.txt", b""))],
        "none.txt: no text in the file (it is empty); give one text per line",
    ),
    (
        "JSON Lines line that is not an object",
        lambda c: ["tokenizer", tokenizer_recipe(c.tmp, write(c.tmp / "l.jsonl", b'{"text": "a"}\n[1, 2]\n'))],
        'l.jsonl: line 2: a JSON list, expected an object per line (like {"text": ...})',
    ),
    (
        "no label names",
        lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c)), "data.labels=[]"],
        "'labels' must name at least 2 labels, in id order, got []",
    ),
]


class Ctx:
    def __init__(self, tmp, tokenizer, corpus, pretrained, sentiment, finetuned):
        self.tmp, self.tokenizer, self.corpus, self.sentiment, self.finetuned = (
            tmp,
            tokenizer,
            corpus,
            sentiment,
            finetuned,
        )
        self.mlm, self.clm = pretrained["mlm"], pretrained["clm"]


@pytest.mark.parametrize("name, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line_and_writes_nothing(
    tmp_path,
    tiny_tokenizer,
    tiny_corpus,
    pretrained,
    sentiment_dir,
    finetuned,
    capsys,
    monkeypatch,
    name,
    argv,
    message,
):
    home = tmp_path / "home"
    (home / "work" / "project").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    (home / "work" / "project" / "draft.txt").write_text("mine too")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home / "work" / "project")  # what an empty path or "." would be
    ctx = Ctx(tmp_path, tiny_tokenizer, tiny_corpus, pretrained, sentiment_dir, finetuned)
    args = argv(ctx)
    message = message.replace("{tmp}", str(tmp_path.resolve())).replace("{cwd}", str(Path.cwd().resolve()))
    capsys.readouterr()
    before = hashes(tmp_path, finetuned, pretrained["mlm"], caches=home / ".cache")
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0, name
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], err[-3:]
    assert not (tmp_path / "out").exists()
    after = hashes(tmp_path, finetuned, pretrained["mlm"], caches=home / ".cache")
    assert after == before  # nothing the user had changed, nothing added
