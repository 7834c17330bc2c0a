"""Texts longer than one model input: the tokenizer's windows, pooled logits, what training
reads of a long text, the share of texts cut, and evaluate/predict/pipeline on texts longer
than the model's positions."""

import json
import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nlp_ssl import finetune
from nlp_ssl.cli import main
from nlp_ssl.errors import ConfigError
from nlp_ssl.inference import ReadingOptions, load_finetuned, predict_texts
from nlp_ssl.tasks.windows import COUNT_COLUMN, Windows, pool_logits
from tests.finetune_helpers import sentiment_config
from tests.helpers import NEGATIVE, NEUTRAL, POSITIVE, write_jsonl


def long_text(words: int, seed: int = 0, cue: str | None = None) -> str:
    rng = random.Random(seed)
    body = [rng.choice(NEUTRAL) for _ in range(words)]
    if cue is not None:  # the sentiment word near the end: only a reader of the whole text sees it
        body[-3] = cue
    return " ".join(body) + "."


def tokenizer_of(run: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(run / "model"))


def test_windows_are_the_tokenizers_overflow_and_truncation_keeps_the_first(finetuned):
    tok = tokenizer_of(finetuned)
    texts = [long_text(60), "Great film."]
    plan = Windows(length=16, overlap=4)
    enc = plan.encode(tok, [texts])
    ref = tok(texts, truncation=True, max_length=16, stride=4, return_overflowing_tokens=True)
    owner = ref["overflow_to_sample_mapping"]
    assert enc["input_ids"][0] == [ids for ids, o in zip(ref["input_ids"], owner) if o == 0]
    assert enc["input_ids"][1] == [tok("Great film.")["input_ids"]]
    assert enc[COUNT_COLUMN][0] == len(enc["input_ids"][0]) > 3 and enc[COUNT_COLUMN][1] == 1
    # consecutive windows share `overlap` text tokens
    first, second = enc["input_ids"][0][:2]
    assert first[-1 - 4 : -1] == second[1 : 1 + 4]

    cut = Windows.of(16, "truncate", None).encode(tok, [texts])
    assert cut["input_ids"][0] == [tok(texts[0], truncation=True, max_length=16)["input_ids"]]
    assert cut[COUNT_COLUMN] == [
        len(tok(texts[0], truncation=True, max_length=16, return_overflowing_tokens=True)["input_ids"]),
        1,
    ]


def test_pooled_logits_are_each_texts_mean_and_a_single_window_is_unchanged():
    logits = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.5, 0.5], [-1.0, 4.0]])
    owner = torch.tensor([0, 0, 1, 2])
    pooled = pool_logits(logits, owner, 3)
    assert torch.allclose(pooled, torch.tensor([[2.0, 1.0], [0.5, 0.5], [-1.0, 4.0]]))


def test_what_training_reads_of_a_long_text():
    drawn = Windows(16, 4, "random")
    picks = {drawn.picked(5, row=7, epoch=e, seed=0, training=True)[0] for e in range(20)}
    assert len(picks) > 1 and picks <= set(range(5))  # a new window most epochs ...
    assert drawn.picked(5, 7, 3, 0, True) == drawn.picked(5, 7, 3, 0, True)  # ... seeded by text and epoch
    assert list(drawn.picked(5, 7, 3, 0, training=False)) == [0, 1, 2, 3, 4]  # evaluation reads all
    assert Windows(16, 4, "first").picked(5, 7, 3, 0, True) == [0]
    assert list(Windows(16, 4, "all").picked(5, 7, 3, 0, True)) == [0, 1, 2, 3, 4]


def windowed_folder(root: Path, n_long: dict, n_short: dict) -> Path:
    """Splits of short texts and long ones (over 60 tokens); the long ones' label is in their last words."""
    for split, seed in (("train", 0), ("validation", 1), ("test", 2)):
        rows = []
        for k in range(n_long[split]):
            label = k % 2
            rows.append({"text": long_text(70, seed * 100 + k, cue=(NEGATIVE, POSITIVE)[label][k % 5]), "label": label})
        rng = random.Random(seed)
        for k in range(n_short[split]):
            label = k % 2
            rows.append({"text": f"{rng.choice(NEUTRAL)} {(NEGATIVE, POSITIVE)[label][k % 5]}.", "label": label})
        write_jsonl(root / f"{split}.jsonl", rows)
    return root


def test_shares_of_texts_cut_against_a_hand_made_dataset(tmp_path, pretrained, caplog):
    data = windowed_folder(
        tmp_path / "data", {"train": 6, "validation": 2, "test": 5}, {"train": 14, "validation": 6, "test": 5}
    )
    with caplog.at_level(logging.WARNING):
        metrics = finetune.run(sentiment_config(tmp_path / "windows", pretrained["mlm"], data, epochs=1))
    assert (
        metrics["long_texts"] == "windows" and metrics["window_overlap"] == 8 and metrics["train_windows"] == "random"
    )
    assert metrics["train_long_share"] == 0.3 and metrics["train_truncated_share"] == 0.3  # one window per epoch
    assert metrics["eval_long_share"] == 0.25 and metrics["eval_truncated_share"] == 0.0  # read whole
    assert metrics["test_long_share"] == 0.5 and metrics["test_truncated_share"] == 0.0
    warned = [r.getMessage() for r in caplog.records if "are cut" in r.getMessage()]
    assert warned == [
        "train: 30% of the texts are longer than max_length (32 tokens) and are cut; training reads one "
        "window of each (data.train_windows: all reads every window)"
    ]
    saved = json.loads((tmp_path / "windows" / "model" / "config.json").read_text())["nlp_ssl"]
    assert saved == {"task": "sentiment", "long_texts": "windows", "window_overlap": 8}

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cut = finetune.run(
            sentiment_config(tmp_path / "cut", pretrained["mlm"], data, data={"long_texts": "truncate"}, epochs=1)
        )
    assert cut["eval_truncated_share"] == 0.25 and cut["test_truncated_share"] == 0.5 and "train_windows" not in cut
    warned = [r.getMessage() for r in caplog.records if "are cut" in r.getMessage()]
    assert len(warned) == 3 and warned[-1].startswith("test: 50% of the texts") and "long_texts: windows" in warned[-1]

    whole = finetune.run(
        sentiment_config(tmp_path / "all", pretrained["mlm"], data, data={"train_windows": "all"}, epochs=1)
    )
    assert whole["train_truncated_share"] == 0.0 and whole["train_long_share"] == 0.3


def test_a_batch_of_all_windows_pools_them_into_one_loss_per_text(tmp_path, finetuned):
    from nlp_ssl.data import DatasetSpec
    from nlp_ssl.tasks.classification import ClassificationTask, LabelSet, tokenize_labelled

    ft = load_finetuned(str(finetuned))
    rows = [{"text": long_text(80, 1, "great"), "label": 1}, {"text": "Boring film.", "label": 0}]
    spec = DatasetSpec(files=str(write_jsonl(tmp_path / "t.jsonl", rows)))
    plan = Windows(32, 8, "all")
    ds, labels = tokenize_labelled(spec, lambda texts: plan.encode(ft.tokenizer, texts), LabelSet.of(ft.model), "label")
    task = ClassificationTask(ft.model, ft.tokenizer, {"train": ds, "eval": ds}, labels, plan)
    batch = task.make_batch(np.array([0, 1]), epoch=0, split="train")
    n = ds[0][COUNT_COLUMN]
    assert n > 2 and batch.inputs["window_owner"].tolist() == [0] * n + [1] and batch.n_targets == 2
    with torch.no_grad():
        loss = task.module(**batch.inputs)
        per_window = ft.model(input_ids=batch.inputs["input_ids"], attention_mask=batch.inputs["attention_mask"]).logits
    pooled = torch.stack([per_window[:n].mean(0), per_window[n]])
    assert loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(pooled, torch.tensor([1, 0]), reduction="sum").item(), rel=1e-5
    )
    assert task.lengths("train").tolist() == [sum(len(w) for w in ds[0]["input_ids"]), len(ds[1]["input_ids"][0])]
    drawn = ClassificationTask(ft.model, ft.tokenizer, {"train": ds}, labels, Windows(32, 8, "random"))
    one = drawn.make_batch(np.array([0, 1]), epoch=0, split="train")
    assert "window_owner" not in one.inputs and one.inputs["input_ids"].shape[0] == 2
    assert drawn.lengths("train").tolist() == [len(ds[0]["input_ids"][0]), len(ds[1]["input_ids"][0])]


def test_predict_evaluate_and_the_card_read_texts_longer_than_the_positions(tmp_path, finetuned, capsys):
    from transformers import pipeline

    from nlp_ssl.tasks.classification import _usage

    ft = load_finetuned(str(finetuned))
    positions = ft.model.config.max_position_embeddings
    text = long_text(400, 5, cue="brilliant")
    assert len(ft.tokenizer(text)["input_ids"]) > 3 * positions
    # the whole-text prediction: the mean of the logits of the tokenizer's windows
    windows = ft.tokenizer(
        text,
        truncation=True,
        max_length=32,
        stride=8,
        return_overflowing_tokens=True,
        padding=True,
        return_tensors="pt",
    )
    windows.pop("overflow_to_sample_mapping")
    with torch.no_grad():
        expected = torch.softmax(ft.model(**windows).logits.mean(0), -1)
    got = predict_texts(str(finetuned), [text, "Great good film."], batch_size=2)
    assert got[0]["probabilities"]["positive"] == pytest.approx(float(expected[1]), abs=1e-5)
    # a short text is one window: the plain prediction, pipeline()'s
    classify = pipeline("text-classification", model=str(finetuned / "model"))
    assert got[1]["probability"] == pytest.approx(classify("Great good film.")[0]["score"], abs=1e-5)
    # what the card says pipeline() does: the first window, as predict with --long-texts truncate
    cut = predict_texts(str(finetuned), [text], reading=ReadingOptions(long_texts="truncate"))
    assert cut[0]["probability"] == pytest.approx(classify(text, truncation=True)[0]["score"], abs=1e-5)

    # the card's snippet, run as a user would, gives predict's answer
    code = _usage(str(finetuned / "model")).replace('"a gripping, beautifully shot film. " * 200', repr(text))
    exec(compile(code, "model card snippet", "exec"), {})
    label, probability = capsys.readouterr().out.split()
    assert label == got[0]["label"] and float(probability) == pytest.approx(got[0]["probability"], abs=1e-5)

    file = write_jsonl(
        tmp_path / "long.jsonl", [{"text": text, "label": 1}, {"text": "Awful boring film.", "label": 0}]
    )
    out = tmp_path / "eval"
    assert main(["evaluate", str(finetuned), str(file), "--output-dir", str(out)]) == 0
    scored = json.loads((out / "metrics.json").read_text())
    assert scored["examples"] == 2
    record = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()][0]
    assert record["probabilities"]["positive"] == pytest.approx(float(expected[1]), abs=1e-5)
    assert (
        main(["evaluate", str(finetuned), str(file), "--output-dir", str(tmp_path / "cut"), "--long-texts", "truncate"])
        == 0
    )
    record = [json.loads(l) for l in (tmp_path / "cut" / "predictions.jsonl").read_text().splitlines()][0]
    assert record["probability"] == pytest.approx(cut[0]["probability"], abs=1e-5)


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"window_overlap": 30},
            "data.window_overlap: 30 must be at least 0 and smaller than the 30 text tokens of a 32-token window",
        ),
        ({"window_overlap": -1}, "data.window_overlap: -1 must be at least 0"),
        ({"long_texts": "truncate", "window_overlap": 4}, "with long_texts: truncate there are none"),
        ({"long_texts": "truncate", "train_windows": "all"}, "with long_texts: truncate there are none"),
        ({"max_length": 128}, "'data.max_length' (128) exceeds the 64 positions of the model"),
    ],
)
def test_bad_window_settings_fail_in_one_line_before_any_output(tmp_path, pretrained, sentiment_dir, data, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=re.escape(message)):
        finetune.run(sentiment_config(out, pretrained["mlm"], sentiment_dir, data=data))
    assert not out.exists()


def test_predict_refuses_an_overlap_that_leaves_nothing_to_read(finetuned, capsys):
    assert main(["predict", str(finetuned), "Great film.", "--window-overlap", "40"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --window-overlap: 40 must be at least 0 and smaller than the 30 text tokens")


def test_recipes_saved_before_windows_read_as_what_they_did(pretrained, sentiment_dir, tiny_tokenizer, tiny_corpus):
    """A run saved before these keys existed cut long texts (and pretrained at one length):
    its recipe reads so, a baseline's data has none of them, and a pretraining recipe without
    long_blocks is the same recipe."""
    from nlp_ssl.baselines import BaselineConfig
    from nlp_ssl.config import from_dict, recipe_changes, to_dict
    from tests.pretrain_helpers import tiny_config

    cfg = sentiment_config(Path("out"), pretrained["mlm"], sentiment_dir)
    old = to_dict(cfg)
    for key in ("long_texts", "window_overlap", "train_windows"):
        del old["data"][key]
    assert recipe_changes(old, cfg) == ["data.long_texts: truncate -> windows"]
    cut = sentiment_config(Path("out"), pretrained["mlm"], sentiment_dir, data={"long_texts": "truncate"})
    assert recipe_changes(old, cut) == []
    raw = {"output_dir": "o", "method": "tfidf_logreg", "data": {"train": {"name": str(sentiment_dir)}}}
    baseline = from_dict(BaselineConfig, raw)
    assert "long_texts" not in to_dict(baseline)["data"]
    with pytest.raises(ConfigError, match="unknown key 'data.long_texts'"):
        from_dict(BaselineConfig, {**raw, "data": {**raw["data"], "long_texts": "windows"}})
    pre = tiny_config(Path("p"), tiny_tokenizer, tiny_corpus, "mlm")
    saved = to_dict(pre)
    del saved["data"]["long_blocks"]
    assert recipe_changes(saved, pre) == []


def test_short_texts_make_the_batches_they_made_before(finetuned):
    """Every text fits one window: the token ids and the batch are those of the plain
    tokenizer call and DataCollatorWithPadding."""
    from transformers import DataCollatorWithPadding

    from nlp_ssl.data import DatasetSpec
    from nlp_ssl.tasks.classification import ClassificationTask, LabelSet, encoder, tokenize_labelled

    ft = load_finetuned(str(finetuned))
    texts = ["Great good film.", "Boring awful slow movie with a plot.", "Bad."]
    spec_rows = [{"text": t, "label": k % 2} for k, t in enumerate(texts)]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        spec = DatasetSpec(files=str(write_jsonl(Path(tmp) / "s.jsonl", spec_rows)))
        plan = Windows.of(32, "windows", None)
        ds, labels = tokenize_labelled(spec, encoder(plan, ft.tokenizer), LabelSet.of(ft.model), "label")
        task = ClassificationTask(ft.model, ft.tokenizer, {"train": ds}, labels, plan)
        batch = task.make_batch(np.arange(3), epoch=1, split="train")
    old = [dict(ft.tokenizer(t, truncation=True, max_length=32)) for t in texts]
    keep = set(task.inputs) | {"attention_mask"}
    expected = DataCollatorWithPadding(ft.tokenizer)([{k: v for k, v in e.items() if k in keep} for e in old])
    assert set(batch.inputs) == set(expected) | {"labels"}
    for key, value in expected.items():
        assert torch.equal(batch.inputs[key], value), key
    assert batch.inputs["labels"].tolist() == [0, 1, 0]


def test_sentence_pairs_are_cut_and_say_so(tmp_path, pretrained):
    from nlp_ssl.config import from_dict
    from nlp_ssl.tasks.classification import SentimentConfig

    rows = [{"a": long_text(40, k), "b": "Great film." if k % 2 else "Bad film.", "label": k % 2} for k in range(40)]
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / "pairs" / f"{split}.jsonl", rows)
    spec = {"name": str(tmp_path / "pairs"), "text_column": ["a", "b"]}
    cfg = sentiment_config(tmp_path / "run", pretrained["mlm"], tmp_path / "pairs", epochs=1)
    raw = {
        **{k: getattr(cfg, k) for k in ("output_dir", "task", "init", "seed")},
        "data": {
            "train": {**spec, "split": "train"},
            "validation": {**spec, "split": "validation"},
            "labels": ["negative", "positive"],
            "max_length": 32,
        },
        "train": {"epochs": 1, "micro_batch_size": 8, "tracker": "none"},
    }
    metrics = finetune.run(from_dict(SentimentConfig, raw))
    assert metrics["eval_long_share"] == 1.0 and metrics["eval_truncated_share"] == 1.0


def test_a_causal_classifier_reads_windows_and_its_card_snippet_agrees(tmp_path, pretrained, capsys):
    """GPT-2 classifies from the last token of each window; pipeline() and the card's snippet
    pass no token-type ids (GPT-2 would add them as word embeddings)."""
    from transformers import pipeline

    from nlp_ssl.tasks.classification import _usage

    data = windowed_folder(
        tmp_path / "data", {"train": 10, "validation": 4, "test": 4}, {"train": 30, "validation": 4, "test": 4}
    )
    finetune.run(sentiment_config(tmp_path / "clm", pretrained["clm"], data, epochs=1))
    model_dir = tmp_path / "clm" / "model"
    assert "token_type_ids" not in tokenizer_of(tmp_path / "clm")("Great film.")
    text = long_text(300, 9, cue="awful")
    got = predict_texts(str(tmp_path / "clm"), [text, "Great good film."])
    classify = pipeline("text-classification", model=str(model_dir))
    assert got[1]["probability"] == pytest.approx(classify("Great good film.")[0]["score"], abs=1e-5)
    code = _usage(str(model_dir)).replace('"a gripping, beautifully shot film. " * 200', repr(text))
    exec(compile(code, "model card snippet", "exec"), {})
    label, probability = capsys.readouterr().out.split()
    assert label == got[0]["label"] and float(probability) == pytest.approx(got[0]["probability"], abs=1e-5)


def test_a_held_out_validation_reads_windows_too(tmp_path, pretrained):
    data = windowed_folder(
        tmp_path / "data", {"train": 20, "validation": 0, "test": 2}, {"train": 20, "validation": 0, "test": 2}
    )
    (data / "validation.jsonl").unlink()
    cfg = sentiment_config(
        tmp_path / "run", pretrained["mlm"], data, epochs=1, data={"validation": None, "validation_fraction": 0.25}
    )
    metrics = finetune.run(cfg)
    assert (
        metrics["eval_examples"] == 10 and 0 < metrics["eval_long_share"] < 1 and metrics["eval_truncated_share"] == 0.0
    )


def test_a_held_out_validation_of_a_label_sorted_file_is_in_random_order(tmp_path):
    """train.eval_max_batches scores the first held-out examples: of a file sorted by label
    (imdb, rotten_tomatoes) they must not all be one label."""
    from nlp_ssl.baselines import BaselineConfig
    from nlp_ssl.config import from_dict
    from nlp_ssl.head_model import Texts
    from nlp_ssl.tasks.classification import load_sentiment_data

    rows = [{"text": f"review {k}", "label": int(k >= 200)} for k in range(400)]
    write_jsonl(tmp_path / "sorted" / "train.jsonl", rows)
    raw = {"output_dir": "o", "method": "tfidf_logreg", "data": {"train": {"name": str(tmp_path / "sorted")}}}
    splits, _, pool = load_sentiment_data(from_dict(BaselineConfig, raw), Texts())
    first = splits["eval"]["label_id"][:10]
    assert len(splits["eval"]) == 40 and 0 < sum(first) < 10
    held = {t for t in splits["eval"]["baseline_text"]}
    assert held.isdisjoint(splits["train"][int(i)]["baseline_text"] for i in pool)
