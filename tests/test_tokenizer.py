"""Tokenizer stage: each model type, special tokens, AutoTokenizer round trip, streaming,
several corpora, the output-directory contract, and no clobbering."""

import json
import subprocess
import sys

import pytest
import yaml
from transformers import AutoTokenizer

from nlp_ssl.cli import main
from nlp_ssl.config import load_recipe
from nlp_ssl.data import DatasetSpec
from nlp_ssl.errors import OutputError
from nlp_ssl.outputs import METRICS_FILE
from nlp_ssl.tokenizer import TokenizerConfig, run
from tests.helpers import make_sentences, needs_shared_data, write_jsonl

GERMAN = "der die das Katze Hund spielt Straße läuft Mann Frau Kind schnell".split()


def config(tmp_path, corpus, **kw):
    kw.setdefault("vocab_size", 400)
    return TokenizerConfig(output_dir=str(tmp_path / "tok"), datasets=[DatasetSpec(files=str(corpus))], **kw)


@pytest.mark.parametrize("model", ["bpe", "wordpiece", "unigram"])
def test_each_model_loads_with_autotokenizer(tmp_path, corpus_file, model):
    normalization = ["lowercase"] if model == "wordpiece" else []
    cfg = config(
        tmp_path, corpus_file, model=model, vocab_size=300 if model == "bpe" else 120, normalization=normalization
    )
    metrics = run(cfg)
    tok = AutoTokenizer.from_pretrained(cfg.output_dir)
    # a class name transformers 4.x knows too
    assert (
        json.loads((tmp_path / "tok/tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    )
    # ids fixed by SpecialTokens order: both objectives find what they need
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert tok.cls_token == tok.bos_token and tok.sep_token == tok.eos_token
    assert len(tok) == metrics["vocab_size"] <= cfg.vocab_size
    text = "The movie was brilliant. The ending awful."
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    decoded = tok.decode(ids, skip_special_tokens=True)
    if model == "wordpiece":  # WordPiece drops spaces before punctuation when decoding
        assert decoded.replace(" .", ".") == text.lower()
    else:
        assert decoded == text


def test_byte_level_bpe_round_trips_any_text(tmp_path, corpus_file):
    run(config(tmp_path, corpus_file))
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    for text in ["Ünïcödé 日本語 🙂", "  two  spaces\nnew line\ttab", "<mask> is special"]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok("a <mask>", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("a"), tok.mask_token_id]


def test_normalization_lowercases(tmp_path, corpus_file):
    run(
        config(
            tmp_path,
            corpus_file,
            model="wordpiece",
            vocab_size=120,
            normalization=["nfd", "lowercase", "strip_accents"],
        )
    )
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.tokenize("MOVIE") == tok.tokenize("movie") and tok.tokenize("Mövie") == tok.tokenize("movie")


def test_streaming_gives_the_same_tokenizer(tmp_path, corpus_file):
    eager = config(tmp_path, corpus_file)
    streamed = config(tmp_path, corpus_file)
    streamed.output_dir = str(tmp_path / "streamed")
    streamed.datasets[0].streaming = True
    run(eager)
    run(streamed)
    assert (
        json.loads((tmp_path / "tok/tokenizer.json").read_text())["model"]
        == json.loads((tmp_path / "streamed/tokenizer.json").read_text())["model"]
    )


def test_several_datasets_share_one_vocabulary(tmp_path, corpus_file):
    german = write_jsonl(tmp_path / "de.jsonl", [{"translation": {"de": t}} for t in make_sentences(300, 1, GERMAN)])
    cfg = config(tmp_path, corpus_file, vocab_size=700)
    cfg.datasets.append(DatasetSpec(files=str(german), text_column="translation.de"))
    run(cfg)
    tok = AutoTokenizer.from_pretrained(cfg.output_dir)
    assert len(tok.tokenize(" straße")) == 1 and len(tok.tokenize(" movie")) == 1
    corpus = json.loads((tmp_path / "tok/tokenizer_corpus.json").read_text())
    assert [d["texts"] for d in corpus["datasets"]] == [300, 300]


def test_output_contract(tmp_path, corpus_file):
    cfg = config(tmp_path, corpus_file, seed=7)
    metrics = run(cfg)
    out = tmp_path / "tok"
    saved = json.loads((out / METRICS_FILE).read_text())
    assert saved == metrics
    for key in ("corpus_bytes", "seconds", "mb_per_s", "vocab_size"):
        assert isinstance(saved[key], (int, float)) and saved[key] > 0
    assert saved["corpus_bytes"] == sum(len(json.loads(l)["text"].encode()) for l in open(corpus_file))
    info = json.loads((out / "run_info.json").read_text())
    assert info["stage"] == "tokenizer" and info["seed"] == 7 and info["versions"]["tokenizers"]
    assert info["started_at"] <= info["finished_at"]
    assert load_recipe(TokenizerConfig, out / "resolved_config.yaml") == cfg
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_finished_run_is_not_clobbered(tmp_path, corpus_file):
    cfg = config(tmp_path, corpus_file)
    run(cfg)
    before = (tmp_path / "tok/tokenizer.json").read_bytes()
    with pytest.raises(OutputError, match=r"holds a finished run .*--overwrite"):
        run(cfg)
    cfg.vocab_size = 350
    run(cfg, overwrite=True)
    assert (tmp_path / "tok/tokenizer.json").read_bytes() != before


def test_foreign_directory_is_not_clobbered(tmp_path, corpus_file):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok/notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"exists and is not empty"):
        run(config(tmp_path, corpus_file))
    assert (tmp_path / "tok/notes.txt").read_text() == "mine"


def test_failed_run_keeps_previous_output(tmp_path, corpus_file):
    cfg = config(tmp_path, corpus_file)
    run(cfg)
    before = sorted(p.name for p in (tmp_path / "tok").iterdir())
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    cfg.datasets.append(DatasetSpec(files=str(bad)))
    with pytest.raises(Exception, match=r"bad.jsonl: line 2"):
        run(cfg, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tok")]


def test_cli_errors_are_one_line_and_nonzero(tmp_path, corpus_file, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "o"), "datasets": [{"files": str(corpus_file)}]}))
    assert main(["tokenizer", str(recipe), "vocab_sise=300"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "did you mean 'vocab_size'" in err[-1]
    assert main(["tokenizer", str(recipe), "datasets.0.text_column=body"]) == 2
    assert "no column 'body'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_python_dash_m_runs_the_stage(tmp_path, corpus_file):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "o"), "datasets": [{"files": str(corpus_file)}]}))
    done = subprocess.run(
        [sys.executable, "-m", "nlp_ssl", "tokenizer", str(recipe), "vocab_size=300"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["vocab_size"] <= 300
    assert (tmp_path / "o/tokenizer.json").is_file()


@pytest.mark.integration
@needs_shared_data("imdb_unsup_lm")
def test_integration_shared_pretraining_corpus(tmp_path):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes/tokenizer/bpe_imdb.yaml"
    cfg = load_recipe(TokenizerConfig, recipe, [f"output_dir={tmp_path / 'tok'}", "vocab_size=2000"])
    metrics = run(cfg)
    assert metrics["corpus_texts"] == 24000 and metrics["corpus_bytes"] > 30_000_000
    assert metrics["vocab_size"] == 2000 and metrics["mb_per_s"] > 0
    tok = AutoTokenizer.from_pretrained(cfg.output_dir)
    text = "This film was a masterpiece of suspense."
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    # <br /> tags were cleaned before training: no merge learned for them
    assert "<br" not in "".join(tok.convert_ids_to_tokens(range(len(tok))))


def test_overrides_may_follow_flags(tmp_path, corpus_file, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "o"), "datasets": [{"files": str(corpus_file)}]}))
    assert main(["tokenizer", str(recipe), "--overwrite", "vocab_size=300", "--print-config"]) == 0
    assert "vocab_size: 300" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["tokenizer", str(recipe), "--no-such-flag"])


def test_reading_bar_counts_toward_the_corpus_size(tmp_path, corpus_file, capsys):
    """The reading bar knows how many texts it will read (rows x text columns), so it shows a
    total and a rate rather than a bare byte count."""
    n = sum(1 for line in open(corpus_file, encoding="utf-8") if line.strip())
    run(config(tmp_path, corpus_file))
    err = capsys.readouterr().err
    final = [chunk for chunk in err.replace("\r", "\n").splitlines() if chunk.startswith("reading corpus")][-1]
    assert f"{n}/{n}" in final and "100%" in final and "MiB" in final, final
