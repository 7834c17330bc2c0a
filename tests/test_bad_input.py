"""Every kind of bad input the stages and commands accept, in one table: each exits non-zero
with one ``error:`` line naming the file, line, row or key, and leaves no output behind."""

import shutil
from pathlib import Path

import pytest
import yaml

from nlp_ssl.cli import main
from tests.helpers import make_reviews, write_jsonl


def recipe(tmp: Path, data: dict) -> str:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def tokenizer_recipe(tmp, files, **extra):
    return recipe(tmp, {"output_dir": str(tmp / "out"), "vocab_size": 300, "datasets": [{"files": str(files)}], **extra})


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def pretrain_raw(ctx, **changes) -> dict:
    raw = {"output_dir": str(ctx.tmp / "out"), "tokenizer": str(ctx.tokenizer), "objective": "mlm",
           "data": {"datasets": [{"files": str(ctx.corpus)}], "block_size": 32, "validation_fraction": 0.1},
           "model": {"preset": "tiny", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 64},
           "train": {"max_steps": 2, "micro_batch_size": 4, "tracker": "none"}}
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return raw


def sentiment_raw(ctx, data_dir=None, **changes) -> dict:
    data_dir = data_dir or ctx.sentiment
    raw = {"output_dir": str(ctx.tmp / "out"), "task": "sentiment", "init": str(ctx.mlm),
           "data": {"train": {"name": str(data_dir), "split": "train"},
                    "validation": {"name": str(data_dir), "split": "validation"},
                    "labels": ["negative", "positive"], "max_length": 32},
           "train": {"epochs": 1, "tracker": "none"}}
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
    return {"output_dir": str(ctx.tmp / "out"), "task": "translation", "init": str(ctx.mlm),
            "init_decoder": str(ctx.clm), "data": {"train": {"files": str(pairs)}, "source_lang": "en",
                                                   "target_lang": "de", "max_source_length": 32,
                                                   "max_target_length": 32},
            "train": {"epochs": 1, "tracker": "none"}}


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
    ("empty corpus", lambda c: ["tokenizer", tokenizer_recipe(c.tmp, write(c.tmp / "e.txt", b""))],
     "split 'train' is empty"),
    ("whitespace-only corpus", lambda c: ["tokenizer", tokenizer_recipe(c.tmp, write(c.tmp / "w.txt", b"  \n\n \t\n"))],
     "has 3 rows but no text (all empty or whitespace)"),
    ("not UTF-8", lambda c: ["tokenizer", tokenizer_recipe(c.tmp, write(c.tmp / "l.txt", b"ok\ncaf\xe9\n"))],
     "l.txt: line 2: bytes are not valid UTF-8"),
    ("JSONL line not JSON", lambda c: ["tokenizer", tokenizer_recipe(
        c.tmp, write(c.tmp / "b.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": oops}\n'))],
     "b.jsonl: line 3: not valid JSON"),
    ("missing text column", lambda c: ["tokenizer", tokenizer_recipe(
        c.tmp, write(c.tmp / "n.jsonl", b'{"body": "a"}\n'))], "no column 'text' (columns: body)"),
    # -- recipes ----------------------------------------------------------------------------------------
    ("misspelt key", lambda c: ["tokenizer", recipe(c.tmp, {"output_dir": str(c.tmp / "out"), "vocab_sise": 300})],
     "unknown key 'vocab_sise'; did you mean 'vocab_size'?"),
    ("wrong type", lambda c: ["tokenizer", tokenizer_recipe(c.tmp, c.corpus), "vocab_size=big"], "vocab_size"),
    ("misspelt override", lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c)), "train.lrr=0.1"],
     "unknown key 'train.lrr'; did you mean 'train.lr'?"),
    ("not YAML", lambda c: ["tokenizer", str(write(c.tmp / "r.yaml", b"output_dir: [x\n"))], "not valid YAML"),
    ("recipe not found", lambda c: ["tokenizer", str(c.tmp / "nope.yaml")], "recipe file not found"),
    ("negative learning rate", lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c, **{"train.lr": -1e-3}))], "'lr'"),
    ("block larger than positions", lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c, **{"data.block_size": 128}))],
     "block_size"),
    ("unknown stage name", lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, task="sentimnet"))], "task"),
    # -- tokenizers and checkpoints --------------------------------------------------------------------
    ("MLM with a tokenizer without mask token", lambda c: [
        "pretrain", recipe(c.tmp, pretrain_raw(c, tokenizer=str(no_mask_tokenizer(c))))], "has no mask token"),
    ("tokenizer is not a tokenizer folder", lambda c: [
        "pretrain", recipe(c.tmp, pretrain_raw(c, tokenizer=str(c.tmp)))], "tokenizer"),
    ("tokenizer/model vocab mismatch", lambda c: [
        "pretrain", recipe(c.tmp, pretrain_raw(c, tokenizer=str(bigger_tokenizer(c)), init=str(c.mlm)))],
     "tokenizer"),
    ("checkpoint is not a model folder", lambda c: [
        "finetune", recipe(c.tmp, sentiment_raw(c, init=str(c.tokenizer)))], "init"),
    ("unreadable checkpoint", lambda c: ["finetune", recipe(c.tmp, sentiment_raw(c, init=str(corrupt_copy(c))))],
     "broken: weights cannot be loaded"),
    ("wrong architecture for the task", lambda c: ["evaluate", str(c.mlm), str(c.sentiment), "--split", "test"],
     "not a sequence classifier or an encoder-decoder"),
    ("max_length beyond the model's positions", lambda c: [
        "finetune", recipe(c.tmp, sentiment_raw(c, data={**sentiment_raw(c)["data"], "max_length": 512}))],
     "'data.max_length' (512) exceeds the 64 positions"),
    # -- labelled data ------------------------------------------------------------------------------------
    ("label out of range", lambda c: ["finetune", recipe(c.tmp, sentiment_raw(
        c, labelled_folder(c, reviews()[:5] + [{"text": "odd", "label": 5}])))],
     "train.jsonl: row 5: label 5 is out of range (expected 0..1: negative, positive)"),
    ("unknown label name", lambda c: ["finetune", recipe(c.tmp, sentiment_raw(
        c, labelled_folder(c, reviews()[:3] + [{"text": "odd", "label": "meh"}])))],
     "row 3: label 'meh' is not one of: negative, positive"),
    ("missing label", lambda c: ["finetune", recipe(c.tmp, sentiment_raw(
        c, labelled_folder(c, reviews()[:2] + [{"text": "odd", "label": None}])))], "row 2: label is missing"),
    ("missing label column", lambda c: ["finetune", recipe(c.tmp, sentiment_raw(
        c, labelled_folder(c, [{"text": r["text"], "stars": 1} for r in reviews()])))], "no label column 'label'"),
    ("missing language key", lambda c: ["finetune", recipe(c.tmp, {
        "output_dir": str(c.tmp / "out"), "task": "translation", "init": str(c.mlm), "init_decoder": str(c.clm),
        "data": {"train": {"files": str(write_jsonl(c.tmp / "mt.jsonl", [
            {"translation": {"en": "a b", "de": "b a"}}] * 3 + [{"translation": {"en": "c"}}]))},
                 "source_lang": "en", "target_lang": "de", "max_source_length": 32, "max_target_length": 32},
        "train": {"epochs": 1, "tracker": "none"}})], "row 3: column 'translation.de' is null, expected text"),
    ("evaluation data without the text column", lambda c: [
        "evaluate", str(c.finetuned), str(labelled_folder(c, [{"txt": "a", "label": 0}])), "--split", "train"],
     "no column 'text'"),
    # -- output folders ---------------------------------------------------------------------------------------
    ("output_dir is a file", lambda c: [
        "pretrain", recipe(c.tmp, pretrain_raw(c, output_dir=str(write(c.tmp / "afile", b"x"))))],
     "is a file, not a folder"),
    ("output_dir under a file", lambda c: [
        "finetune", recipe(c.tmp, sentiment_raw(c, output_dir=str(write(c.tmp / "afile", b"x") / "run")))],
     "cannot be created: "),
    ("output_dir where nothing may be written", lambda c: [
        "pretrain", recipe(c.tmp, pretrain_raw(c, output_dir="/sys/nlp-ssl-out"))], "output_dir /sys/nlp-ssl-out cannot be"),
    ("output_dir inside the checkpoint it starts from", lambda c: [
        "finetune", recipe(c.tmp, sentiment_raw(c, output_dir=str(c.mlm / "ft"))), "--overwrite"],
     "is inside init"),
    ("output_dir is the data folder", lambda c: [
        "finetune", recipe(c.tmp, sentiment_raw(c, labelled_folder(c, reviews()),
                                                output_dir=str(c.tmp / "labelled"))), "--overwrite"],
     "is data.train.name"),
    ("export over the run it exports", lambda c: [
        "export", str(copy_run(c, "par/ft")), str(c.tmp / "par"), "--overwrite"], "contains checkpoint"),
    ("evaluate into the checkpoint", lambda c: [
        "evaluate", str(c.finetuned), str(c.sentiment), "--output-dir", str(c.finetuned / "eval")],
     "is inside checkpoint"),
    # -- numbers out of range ---------------------------------------------------------------------------------
    ("infinite learning rate", lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c)), "train.lr=.inf"],
     "'train.lr' must be a finite number, got inf"),
    ("Adam beta of 1", lambda c: ["pretrain", recipe(c.tmp, pretrain_raw(c)), "train.adam_beta2=1.0"],
     "'adam_beta2' must be in [0, 1), got 1.0"),
    ("batch larger than the training set", lambda c: [
        "finetune", recipe(c.tmp, sentiment_raw(c)), "train.micro_batch_size=100000"],
     "exceeds the"),
    ("evaluate with batch size 0", lambda c: ["evaluate", str(c.finetuned), str(c.sentiment), "--batch-size", "0"],
     "--batch-size must be >= 1, got 0"),
    ("predict beyond the model's positions", lambda c: ["predict", str(c.finetuned), "good film", "--max-length", "4096"],
     "--max-length 4096 exceeds the 64 positions of the model"),
    ("greedy decoding with a beam-search option", lambda c: [
        "finetune", recipe(c.tmp, translation_raw(c)), "generation.num_beams=1", "generation.early_stopping=true"],
     "apply to beam search only"),
    ("generation option transformers refuses", lambda c: [
        "finetune", recipe(c.tmp, translation_raw(c)), "generation.max_new_tokens=0"],
     "'max_new_tokens' and 'num_beams' must be >= 1"),
    # -- commands and compositions -------------------------------------------------------------------------
    ("predict from a missing checkpoint", lambda c: ["predict", str(c.tmp / "nowhere"), "good film"], "nowhere"),
    ("export into its own run folder", lambda c: ["export", str(c.finetuned), str(c.finetuned / "out")],
     "lies inside the run"),
    ("pipeline stage starting from nothing", lambda c: ["pipeline", recipe(c.tmp, {
        "run_dir": str(c.tmp / "out"), "finetune": {"rt": {
            k: v for k, v in sentiment_raw(c, init="mlm").items() if k != "output_dir"}}})],
     "finetune.rt.init: 'mlm' is not a pretraining stage of this pipeline"),
    ("TF-IDF arm on a translation study", lambda c: ["study", recipe(c.tmp, {
        "run_dir": str(c.tmp / "out"), "finetune": {"task": "translation"},
        "arms": {"tfidf": {"method": "tfidf_logreg"}}})], "arms.tfidf: tfidf_logreg is a sentiment"),
]


class Ctx:
    def __init__(self, tmp, tokenizer, corpus, pretrained, sentiment, finetuned):
        self.tmp, self.tokenizer, self.corpus, self.sentiment, self.finetuned = tmp, tokenizer, corpus, sentiment, finetuned
        self.mlm, self.clm = pretrained["mlm"], pretrained["clm"]


@pytest.mark.parametrize("name, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line_and_writes_nothing(tmp_path, tiny_tokenizer, tiny_corpus, pretrained,
                                                        sentiment_dir, finetuned, capsys, name, argv, message):
    ctx = Ctx(tmp_path, tiny_tokenizer, tiny_corpus, pretrained, sentiment_dir, finetuned)
    args = argv(ctx)
    capsys.readouterr()
    before = sorted(p.name for p in finetuned.rglob("*"))
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0, name
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], err[-3:]
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in finetuned.rglob("*")) == before  # nothing the user had was touched
