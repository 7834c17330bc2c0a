"""Token embeddings first (``objective: skipgram`` / ``cbow``): the objective learns what
co-occurs, resumes exactly, loads in sentence_transformers, warm-starts every transformer
architecture, and feeds the frozen-feature head."""

import json
import random

import numpy as np
import pytest

from nlp_ssl import pretrain
from nlp_ssl.config import from_dict
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.objectives import word2vec
from nlp_ssl.objectives.transformer_stage import load_tokenizer_and_model
from nlp_ssl.vectors import VECTORS_FILE, load_vectors
from tests.helpers import saved_head, write_jsonl

ANIMALS = "cat dog horse cow sheep goat mouse bird".split()
VEHICLES = "car bus train truck bike plane boat tram".split()


@pytest.fixture(scope="module")
def topical(tmp_path_factory):
    """Sentences about animals or about vehicles, never both, and a tokenizer that keeps each
    of those words whole."""
    from nlp_ssl.data import DatasetSpec
    from nlp_ssl.tokenizer import TokenizerConfig, run

    root = tmp_path_factory.mktemp("topical")
    rng = random.Random(0)
    rows = []
    for _ in range(1500):
        words = ANIMALS if rng.random() < 0.5 else VEHICLES
        rows.append({"text": " ".join(rng.choice(words) for _ in range(rng.randint(6, 12)))})
    corpus = write_jsonl(root / "corpus.jsonl", rows)
    tok = root / "tokenizer"
    run(TokenizerConfig(output_dir=str(tok), datasets=[DatasetSpec(files=str(corpus))], vocab_size=500))
    return corpus, tok


def embedding_config(out, tokenizer, corpus, objective="skipgram", **train):
    train_cfg = {"epochs": 3, "workers": 1, "tracker": "none", **train}
    return from_dict(
        word2vec.EmbeddingPretrainConfig,
        {
            "output_dir": str(out),
            "objective": objective,
            "tokenizer": str(tokenizer),
            "data": {"datasets": [{"files": str(corpus)}]},
            "model": {"dim": 32, "window": 3, "negative": 5, "sample": 0, "min_count": 2},
            "train": train_cfg,
            "seed": 3,
        },
    )


def word_ids(tokenizer_dir, words):
    from nlp_ssl.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    ids = [tok(" " + w, add_special_tokens=False)["input_ids"] for w in words]
    assert all(len(i) == 1 for i in ids), "the fixture's tokenizer should keep these words whole"
    return [i[0] for i in ids]


@pytest.mark.parametrize("objective", ["skipgram", "cbow"])
def test_tokens_that_share_contexts_end_closer(tmp_path, topical, objective):
    corpus, tok = topical
    metrics = pretrain.run(embedding_config(tmp_path / "emb", tok, corpus, objective))
    vectors, trained, _ = load_vectors(tmp_path / "emb")
    a, v = word_ids(tok, ANIMALS), word_ids(tok, VEHICLES)
    assert trained[a + v].all()
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)

    def mean_cos(xs, ys):
        sims = unit[xs] @ unit[ys].T
        return sims[~np.eye(len(xs), dtype=bool)].mean() if xs == ys else sims.mean()

    within = (mean_cos(a, a) + mean_cos(v, v)) / 2
    across = mean_cos(a, v)
    assert within > across + 0.3, (within, across)
    assert (
        metrics["objective"] == objective
        and metrics["epochs"] == 3
        and metrics["tokens"] == 3 * metrics["corpus_tokens"]
    )
    log = [json.loads(l) for l in (tmp_path / "emb/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["train/tokens_per_s"] > 0 for r in log)
    assert log[-1]["train/loss"] < log[0]["train/loss"]


def test_recipe_reaches_gensim(topical, tmp_path):
    """The sampling settings are the ones word2vec is given: negatives from counts^ns_exponent,
    frequent-token subsampling at ``sample``, the objective's flag."""
    from nlp_ssl.tokenizer import load_tokenizer

    corpus, tok = topical
    cfg = embedding_config(tmp_path / "x", tok, corpus, "cbow")
    cfg.model.ns_exponent, cfg.model.sample, cfg.model.negative = 0.5, 1e-3, 7
    w2v = word2vec.build_word2vec(cfg)
    w2v.build_vocab(word2vec.load_corpus(cfg, load_tokenizer(tok)))
    assert (w2v.sg, w2v.negative, w2v.window, w2v.vector_size) == (0, 7, 3, 32)
    counts = np.array([w2v.wv.get_vecattr(k, "count") for k in w2v.wv.index_to_key], dtype=np.float64)
    expected = np.cumsum(counts**0.5) / np.sum(counts**0.5)
    np.testing.assert_allclose(w2v.cum_table / w2v.cum_table[-1], expected, rtol=1e-6)
    # subsampling keeps a token with probability (sqrt(f/t) + 1) t/f (word2vec's formula)
    threshold = 1e-3 * counts.sum()
    keep = np.minimum((np.sqrt(counts / threshold) + 1) * threshold / counts, 1.0)
    got = np.array([w2v.wv.get_vecattr(k, "sample_int") for k in w2v.wv.index_to_key]) / 2**32
    np.testing.assert_allclose(got, keep, atol=1e-6)
    assert word2vec.lr_schedule(cfg.train) == pytest.approx([0.025 - (0.025 - 1e-4) * e / 3 for e in range(4)])


def test_curves_reach_tensorboard_and_the_log_once_an_epoch(tmp_path, topical):
    """The skip-gram stage logs through the same tracker set-up as every other stage."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    corpus, tok = topical
    pretrain.run(embedding_config(tmp_path / "emb", tok, corpus, tracker="tensorboard"))
    log = [json.loads(l) for l in (tmp_path / "emb/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["train/tokens_per_s"] > 0 for r in log)
    events = EventAccumulator(str(next((tmp_path / "emb/logs").rglob("events.out.tfevents.*")).parent)).Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([r["train/loss"] for r in log], rel=1e-6)


def test_resume_is_exact(tmp_path, topical, monkeypatch):
    """3 epochs == 2 epochs, a crash, and a resume for the third (one worker: deterministic)."""
    from gensim.models import Word2Vec

    corpus, tok = topical
    pretrain.run(embedding_config(tmp_path / "full", tok, corpus))
    calls = {"n": 0}
    real_train = Word2Vec.train

    def crash_in_third_epoch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(Word2Vec, "train", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(embedding_config(tmp_path / "cut", tok, corpus))
    assert sorted(p.name for p in (tmp_path / "cut/checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    assert not (tmp_path / "cut/metrics.json").exists()
    monkeypatch.setattr(Word2Vec, "train", real_train)
    with pytest.raises(Exception, match="unfinished run"):
        pretrain.run(embedding_config(tmp_path / "cut", tok, corpus))
    before = (tmp_path / "cut/train_log.jsonl").read_text().splitlines()
    counted = {"train": 0, "build_vocab": 0}
    for name in counted:
        real = getattr(Word2Vec, name)

        def counting(self, *args, _real=real, _name=name, **kwargs):
            counted[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Word2Vec, name, counting)
    pretrain.run(embedding_config(tmp_path / "cut", tok, corpus, resume="latest"))
    assert counted == {"train": 1, "build_vocab": 0}  # it continued; it did not start over
    assert (tmp_path / "cut/train_log.jsonl").read_text().splitlines()[:2] == before
    a, _, _ = load_vectors(tmp_path / "full")
    b, _, _ = load_vectors(tmp_path / "cut")
    np.testing.assert_array_equal(a, b)
    log = [json.loads(l)["step"] for l in (tmp_path / "cut/train_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]


def test_folder_loads_in_sentence_transformers_and_transformers(tmp_path, topical):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    corpus, tok = topical
    pretrain.run(embedding_config(tmp_path / "emb", tok, corpus, epochs=1))
    vectors, _, folder = load_vectors(tmp_path / "emb")
    st = SentenceTransformer(str(folder), device="cpu")
    text = "cat dog and a bus"
    got = st.encode([text])[0]
    ids = AutoTokenizer.from_pretrained(str(folder))(text, add_special_tokens=False)["input_ids"]
    np.testing.assert_allclose(got, vectors[ids].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert st.get_embedding_dimension() == 32


def test_the_vectors_are_stored_once_and_older_folders_still_load(tmp_path, topical):
    """The vectors live in the StaticEmbedding's weights only; a folder of the earlier layout
    (vectors in embeddings.safetensors too) loads the same; a mask of another run is refused."""
    from safetensors.numpy import load_file, save_file

    corpus, tok = topical
    pretrain.run(embedding_config(tmp_path / "emb", tok, corpus, epochs=1))
    vectors, trained, folder = load_vectors(tmp_path / "emb")
    assert set(load_file(str(folder / VECTORS_FILE))) == {"trained"}
    save_file({"vectors": vectors + 1, "trained": trained.astype(np.uint8)}, str(folder / VECTORS_FILE))
    older, mask, _ = load_vectors(tmp_path / "emb")
    np.testing.assert_array_equal(older, vectors + 1)
    np.testing.assert_array_equal(mask, trained)
    save_file({"trained": trained[:-1].astype(np.uint8)}, str(folder / VECTORS_FILE))
    with pytest.raises(DataError, match="vectors but a mask of"):
        load_vectors(tmp_path / "emb")


@pytest.fixture(scope="module")
def embedding_run(tmp_path_factory, tiny_corpus, tiny_tokenizer):
    """Vectors over the shared tiny tokenizer, as wide as the tiny transformers (32)."""
    out = tmp_path_factory.mktemp("emb") / "run"
    pretrain.run(embedding_config(out, tiny_tokenizer, tiny_corpus, epochs=2))
    return out


@pytest.mark.parametrize(
    "objective,architecture",
    [("mlm", "bert"), ("mlm", "modernbert"), ("mlm", "roberta-prelayernorm"), ("clm", "gpt2"), ("rtd", "bert")],
)
def test_warm_start_copies_vectors_into_every_architecture(
    tmp_path, tiny_corpus, tiny_tokenizer, embedding_run, objective, architecture
):
    from tests.pretrain_helpers import tiny_config

    cfg = tiny_config(tmp_path / "lm", tiny_tokenizer, tiny_corpus, objective)
    if objective == "mlm":  # clm is GPT-2 whatever model.architecture says
        cfg.model.architecture = architecture
    cfg.init_embeddings = str(embedding_run)
    _, model = load_tokenizer_and_model(cfg)
    vectors, trained, _ = load_vectors(embedding_run)
    table = model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(table[: len(vectors)][trained], vectors[trained])
    cfg.init_embeddings = None
    fresh = load_tokenizer_and_model(cfg)[1]
    untrained = np.nonzero(~trained)[0]
    np.testing.assert_array_equal(table[untrained], fresh.get_input_embeddings().weight.detach().numpy()[untrained])


@pytest.mark.parametrize("decoder", ["clm", "mlm"])
@pytest.mark.parametrize("from_scratch", [False, True])
def test_warm_start_copies_vectors_into_both_halves_of_an_encoder_decoder(
    tmp_path, pretrained, embedding_run, decoder, from_scratch
):
    """Translation / summarization: the vectors become the encoder's and the decoder's token
    embeddings, and the decoder's output layer (tied) with them; GPT-2 and BERT decoders."""
    from nlp_ssl.tasks.seq2seq import setup_seq2seq
    from nlp_ssl.training import make_accelerator
    from tests.finetune_helpers import translation_config, write_translation_folder

    data = write_translation_folder(tmp_path / "mt", sizes=(20, 4, 4))
    cfg = translation_config(
        tmp_path / "ft",
        pretrained["mlm"],
        pretrained[decoder],
        data,
        from_scratch=from_scratch,
        init_embeddings=str(embedding_run),
    )
    task, origin = setup_seq2seq(cfg, make_accelerator(cfg.train, tmp_path / "ft"))
    vectors, trained, _ = load_vectors(embedding_run)
    model = task.model
    for half in (model.encoder, model.decoder):
        table = half.get_input_embeddings().weight.detach().numpy()
        np.testing.assert_array_equal(table[: len(vectors)][trained], vectors[trained])
    out = model.decoder.get_output_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(out[: len(vectors)][trained], vectors[trained])
    assert origin["init_embeddings"] == str(embedding_run)
    cfg.init_embeddings = None
    plain = setup_seq2seq(cfg, make_accelerator(cfg.train, tmp_path / "ft"))[0].model
    untrained = np.nonzero(~trained)[0]
    np.testing.assert_array_equal(
        model.encoder.get_input_embeddings().weight.detach().numpy()[untrained],
        plain.encoder.get_input_embeddings().weight.detach().numpy()[untrained],
    )


def test_encoder_decoder_warm_start_refuses_other_tokenizer(tmp_path, pretrained, topical):
    from nlp_ssl.tasks.seq2seq import setup_seq2seq
    from nlp_ssl.training import make_accelerator
    from tests.finetune_helpers import translation_config, write_translation_folder

    other_corpus, other_tok = topical
    other = tmp_path / "other"
    pretrain.run(embedding_config(other, other_tok, other_corpus, epochs=1))
    data = write_translation_folder(tmp_path / "mt", sizes=(20, 4, 4))
    cfg = translation_config(tmp_path / "ft", pretrained["mlm"], pretrained["clm"], data, init_embeddings=str(other))
    with pytest.raises(DataError, match="init_embeddings: .* was trained with another tokenizer"):
        setup_seq2seq(cfg, make_accelerator(cfg.train, tmp_path / "ft"))
    assert not (tmp_path / "ft").exists()


def test_warm_start_refuses_other_tokenizer_and_width(tmp_path, tiny_corpus, tiny_tokenizer, embedding_run, topical):
    from tests.pretrain_helpers import tiny_config

    other_corpus, other_tok = topical
    other = tmp_path / "other"
    pretrain.run(embedding_config(other, other_tok, other_corpus, epochs=1))
    cfg = tiny_config(tmp_path / "lm", tiny_tokenizer, tiny_corpus, "mlm")
    cfg.init_embeddings = str(other)
    with pytest.raises(DataError, match="was trained with another tokenizer than"):
        load_tokenizer_and_model(cfg)
    cfg = tiny_config(tmp_path / "lm", tiny_tokenizer, tiny_corpus, "mlm")
    cfg.model.hidden = 64
    cfg.init_embeddings = str(embedding_run)
    with pytest.raises(ConfigError, match="32-dim vectors but the model's token embeddings are 64 wide"):
        load_tokenizer_and_model(cfg)
    cfg.init_embeddings = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere does not exist"):
        load_tokenizer_and_model(cfg)


def test_finetune_from_scratch_with_embeddings(tmp_path, pretrained, sentiment_dir, embedding_run):
    from nlp_ssl import finetune
    from tests.finetune_helpers import sentiment_config

    cfg = sentiment_config(tmp_path / "ft", pretrained["mlm"], sentiment_dir, epochs=1)
    cfg.from_scratch = True
    cfg.init_embeddings = str(embedding_run)
    metrics = finetune.run(cfg)
    assert metrics["init_embeddings"] == str(embedding_run) and metrics["from_scratch"] is True
    assert 0 <= metrics["test_accuracy"] <= 1


def test_frozen_head_trains_predicts_and_reloads(tmp_path, sentiment_dir, embedding_run):
    """The frozen-feature head: its saved scikit-learn objects and the embedding folder
    reproduce its predictions with no nlp-ssl code; TF-IDF can sit beside the features."""
    from sentence_transformers import SentenceTransformer

    from nlp_ssl import baselines

    data = {
        "train": {"name": str(sentiment_dir), "split": "train"},
        "validation": {"name": str(sentiment_dir), "split": "validation"},
        "test": {"name": str(sentiment_dir), "split": "test"},
        "labels": ["negative", "positive"],
    }
    cfg = from_dict(
        baselines.BaselineConfig,
        {"output_dir": str(tmp_path / "head"), "method": "frozen_logreg", "init": str(embedding_run), "data": data},
    )
    m = baselines.run(cfg)
    assert m["method"] == "frozen_logreg" and m["frozen_features"] == 32 and m["features"] == 32
    head = saved_head(tmp_path / "head")
    records = [json.loads(l) for l in (tmp_path / "head/predictions.jsonl").read_text().splitlines()]
    features = SentenceTransformer(str(embedding_run / "model"), device="cpu").encode([r["text"] for r in records])
    x = head["scaler"].transform(features)
    assert [head["labels"][i] for i in head["classifier"].predict(x)] == [r["prediction"] for r in records]
    assert m["test_accuracy"] == pytest.approx(np.mean([r["prediction"] == r["label"] for r in records]))

    both = from_dict(
        baselines.BaselineConfig,
        {
            "output_dir": str(tmp_path / "both"),
            "method": "frozen_logreg",
            "init": str(embedding_run),
            "tfidf": True,
            "data": data,
        },
    )
    m2 = baselines.run(both)
    assert m2["features"] > 32 and m2["dense_weight"] in (0.5, 1.0, 2.0)


def test_tfidf_with_character_ngrams(tmp_path, sentiment_dir):
    """``char_ngrams``: character n-grams beside the word n-grams, in one saved vectorizer that
    reproduces the predictions; a misspelled word still lands on features; bad values are refused."""

    from nlp_ssl import baselines

    data = {
        "train": {"name": str(sentiment_dir), "split": "train"},
        "validation": {"name": str(sentiment_dir), "split": "validation"},
        "test": {"name": str(sentiment_dir), "split": "test"},
        "labels": ["negative", "positive"],
    }
    words = baselines.run(from_dict(baselines.BaselineConfig, {"output_dir": str(tmp_path / "words"), "data": data}))
    both = baselines.run(
        from_dict(
            baselines.BaselineConfig, {"output_dir": str(tmp_path / "chars"), "data": data, "char_ngrams": [2, 4]}
        )
    )
    assert both["char_ngrams"] == "2-4" and "char_ngrams" not in words
    assert both["features"] > words["features"]
    head = saved_head(tmp_path / "chars")
    records = [json.loads(l) for l in (tmp_path / "chars/predictions.jsonl").read_text().splitlines()]
    x = head["vectorizer"].transform([r["text"] for r in records])
    assert [head["labels"][i] for i in head["classifier"].predict(x)] == [r["prediction"] for r in records]
    word_only = saved_head(tmp_path / "words")["vectorizer"]
    assert word_only.transform(["brilliantt"]).nnz == 0 and head["vectorizer"].transform(["brilliantt"]).nnz > 0

    for bad, message in (
        ({"char_ngrams": [4, 2]}, "'char_ngrams' must be \\[low, high\\]"),
        ({"char_ngrams": [3]}, "'char_ngrams' must be \\[low, high\\]"),
        ({"method": "frozen_logreg", "init": "x", "char_ngrams": [2, 4]}, "needs 'tfidf: true'"),
    ):
        with pytest.raises(ConfigError, match=message):
            from_dict(baselines.BaselineConfig, {"output_dir": str(tmp_path / "x"), "data": data, **bad})


def test_late_fusion_is_one_classifier_averaging_two_heads(tmp_path, sentiment_dir, embedding_run):
    """``fusion: late``: the saved classifier's log-odds are the TF-IDF head's and the frozen
    head's averaged with the chosen share, and it reproduces the predictions from the saved
    scikit-learn objects alone."""
    import scipy.sparse as sp
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    from nlp_ssl import baselines

    data = {
        "train": {"name": str(sentiment_dir), "split": "train"},
        "validation": {"name": str(sentiment_dir), "split": "validation"},
        "test": {"name": str(sentiment_dir), "split": "test"},
        "labels": ["negative", "positive"],
    }
    cfg = from_dict(
        baselines.BaselineConfig,
        {
            "output_dir": str(tmp_path / "late"),
            "method": "frozen_logreg",
            "init": str(embedding_run),
            "tfidf": True,
            "fusion": "late",
            "data": data,
        },
    )
    m = baselines.run(cfg)
    assert m["fusion"] == "late" and m["frozen_share"] in (0.25, 0.5, 0.75) and m["dense_weight"] == 1.0
    head = saved_head(tmp_path / "late")
    records = [json.loads(l) for l in (tmp_path / "late/predictions.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in records]
    tfidf = head["vectorizer"].transform(texts)
    dense = head["scaler"].transform(SentenceTransformer(str(embedding_run / "model"), device="cpu").encode(texts))
    x = sp.hstack([tfidf, sp.csr_matrix(head["dense_weight"] * dense)], format="csr")
    assert [head["labels"][i] for i in head["classifier"].predict(x)] == [r["prediction"] for r in records]

    train = [json.loads(l) for l in (sentiment_dir / "train.jsonl").read_text().splitlines()]
    y = [r["label"] for r in train]
    train_texts = [r["text"] for r in train]
    alone = {}
    for name, feats, c in (
        ("tfidf", head["vectorizer"].transform(train_texts), m["C_tfidf"]),
        (
            "frozen",
            head["scaler"].transform(
                SentenceTransformer(str(embedding_run / "model"), device="cpu").encode(train_texts)
            ),
            m["C_frozen"],
        ),
    ):
        alone[name] = LogisticRegression(C=c, max_iter=3000, random_state=0).fit(feats, y)
    share = m["frozen_share"]
    expected = (1 - share) * alone["tfidf"].decision_function(tfidf) + share * alone["frozen"].decision_function(dense)
    np.testing.assert_allclose(head["classifier"].decision_function(x), expected, rtol=1e-5, atol=1e-6)

    with pytest.raises(ConfigError, match="'fusion: late' averages a TF-IDF head and a frozen-feature head"):
        from_dict(
            baselines.BaselineConfig,
            {
                "output_dir": str(tmp_path / "x"),
                "method": "frozen_logreg",
                "init": str(embedding_run),
                "fusion": "late",
                "data": data,
            },
        )


def test_selection_on_validation_and_cross_validated_predictions(tmp_path, sentiment_dir, embedding_run):
    """``selection: validation_and_cv``: the chosen ``C`` is the best over validation and the
    5-fold cross-validated predictions of the training sample together, recomputed here with
    scikit-learn alone; late fusion chooses its share the same way; too few examples of a label
    for the folds is a one-line error."""
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from nlp_ssl import baselines
    from nlp_ssl.tasks.classification import load_sentiment_data

    data = {
        "train": {"name": str(sentiment_dir), "split": "train"},
        "validation": {"name": str(sentiment_dir), "split": "validation"},
        "test": {"name": str(sentiment_dir), "split": "test"},
        "labels": ["negative", "positive"],
        "train_samples": 30,
    }
    cfg = from_dict(
        baselines.BaselineConfig, {"output_dir": str(tmp_path / "cv"), "data": data, "selection": "validation_and_cv"}
    )
    m = baselines.run(cfg)
    assert m["selection"] == "validation_and_cv" and m["selection_examples"] == 30 + 120

    splits, _, index = load_sentiment_data(cfg, baselines._Texts())
    texts = [splits["train"]["baseline_text"][i] for i in index]
    y = np.asarray(splits["train"]["label_id"])[index]
    vectorizer = baselines.tfidf_vectorizer(cfg).fit(texts)
    x, x_val = vectorizer.transform(texts), vectorizer.transform(splits["eval"]["baseline_text"])
    y_val = np.asarray(splits["eval"]["label_id"])
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
    held_out = []
    for c in cfg.C:

        def fit(rows, c=c):
            return LogisticRegression(C=c, max_iter=3000, random_state=0).fit(x[rows], y[rows])

        right = (fit(np.arange(len(y))).predict(x_val) == y_val).sum()
        right += sum((fit(a).predict(x[b]) == y[b]).sum() for a, b in folds)
        held_out.append(right / 150)
    assert len(set(held_out)) > 1  # the sample is small enough for the choice to matter
    assert m["C"] == cfg.C[int(np.argmax(held_out))]
    assert m["selection_accuracy"] == pytest.approx(max(held_out), abs=1e-6)
    plain = baselines.run(from_dict(baselines.BaselineConfig, {"output_dir": str(tmp_path / "val"), "data": data}))
    assert plain["selection"] == "validation" and plain["selection_examples"] == 120
    assert plain["selection_accuracy"] == pytest.approx(plain["validation_accuracy"], abs=1e-6)

    late = baselines.run(
        from_dict(
            baselines.BaselineConfig,
            {
                "output_dir": str(tmp_path / "late"),
                "method": "frozen_logreg",
                "init": str(embedding_run),
                "tfidf": True,
                "fusion": "late",
                "selection": "validation_and_cv",
                "cv_folds": 3,
                "data": data,
            },
        )
    )
    assert late["selection_examples"] == 150
    # the late head's held-out accuracy, each fold's two heads fitted on that fold's rows alone
    head = saved_head(tmp_path / "late")
    dense, dense_val = (
        head["scaler"].transform(SentenceTransformer(str(embedding_run / "model"), device="cpu").encode(t))
        for t in (texts, splits["eval"]["baseline_text"])
    )
    x, x_val = head["vectorizer"].transform(texts), head["vectorizer"].transform(splits["eval"]["baseline_text"])

    def averaged_log_odds(rows, at, at_dense, share):
        def fit(features, c):
            return LogisticRegression(C=c, max_iter=3000, random_state=0).fit(features[rows], y[rows])

        return (1 - share) * fit(x, late["C_tfidf"]).decision_function(at) + share * fit(
            dense, late["C_frozen"]
        ).decision_function(at_dense)

    by_share = {}
    for share in (0.25, 0.5, 0.75):
        right = ((averaged_log_odds(np.arange(len(y)), x_val, dense_val, share) > 0) == y_val).sum()
        for a, b in StratifiedKFold(3, shuffle=True, random_state=0).split(np.zeros(len(y)), y):
            right += ((averaged_log_odds(a, x[b], dense[b], share) > 0) == y[b]).sum()
        by_share[share] = right / 150
    assert late["selection_accuracy"] == pytest.approx(max(by_share.values()), abs=1e-6)
    assert late["frozen_share"] == max(by_share, key=by_share.get)

    few = from_dict(
        baselines.BaselineConfig,
        {"output_dir": str(tmp_path / "few"), "selection": "validation_and_cv", "cv_folds": 20, "data": data},
    )
    with pytest.raises(
        ConfigError, match="cv_folds=20 needs as many training examples of every label; the sample has 15 of one"
    ):
        baselines.run(few)
    assert not (tmp_path / "few").exists()
    with pytest.raises(ConfigError, match="'cv_folds' must be >= 2"):
        from_dict(baselines.BaselineConfig, {"output_dir": "x", "cv_folds": 1, "data": data})


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_frozen_head_on_a_transformer_checkpoint(tmp_path, pretrained, sentiment_dir, objective):
    from nlp_ssl import baselines

    data = {
        "train": {"name": str(sentiment_dir), "split": "train"},
        "validation": {"name": str(sentiment_dir), "split": "validation"},
        "labels": ["negative", "positive"],
        "max_length": 32,
    }
    cfg = from_dict(
        baselines.BaselineConfig,
        {
            "output_dir": str(tmp_path / "head"),
            "method": "frozen_logreg",
            "init": str(pretrained[objective]),
            "data": data,
        },
    )
    m = baselines.run(cfg)
    assert m["frozen_features"] == 32 and m["predictions_split"] == "validation"


def test_pipeline_tokenizer_embeddings_mlm_finetune(tmp_path, tiny_corpus, sentiment_dir):
    """One pipeline chains tokenizer -> skip-gram -> MLM warm-started from it -> fine-tuning,
    and the frozen head on the embeddings; a second run skips every stage."""
    from nlp_ssl import pipeline

    corpus = {"files": str(tiny_corpus)}
    data = {
        "train": {"name": str(sentiment_dir), "split": "train"},
        "validation": {"name": str(sentiment_dir), "split": "validation"},
        "test": {"name": str(sentiment_dir), "split": "test"},
        "labels": ["negative", "positive"],
        "max_length": 32,
    }
    cfg = from_dict(
        pipeline.PipelineConfig,
        {
            "run_dir": str(tmp_path / "run"),
            "tokenizer": {"datasets": [corpus], "vocab_size": 320},
            "pretrain": {
                "sg": {
                    "objective": "skipgram",
                    "data": {"datasets": [corpus]},
                    "model": {"dim": 32, "min_count": 2},
                    "train": {"epochs": 1, "tracker": "none"},
                },
                "mlm": {
                    "objective": "mlm",
                    "init_embeddings": "sg",
                    "data": {"datasets": [corpus], "block_size": 32, "validation_fraction": 0.1},
                    "model": {"preset": "tiny", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 64},
                    "train": {
                        "max_steps": 4,
                        "micro_batch_size": 8,
                        "eval_every": 4,
                        "save_every": 4,
                        "tracker": "none",
                    },
                },
            },
            "finetune": {
                "rt": {
                    "task": "sentiment",
                    "init": "mlm",
                    "data": data,
                    "dropout": 0.0,
                    "train": {"epochs": 1, "micro_batch_size": 16, "tracker": "none"},
                }
            },
            "baseline": {"probe": {"method": "frozen_logreg", "init": "sg", "data": data}},
        },
    )
    summary = pipeline.run(cfg)
    assert summary["stages_run"] == 5
    results = pipeline.load_results(tmp_path / "run")
    assert results["stages"]["pretrain-sg"]["objective"] == "skipgram"
    assert (
        "test_accuracy" in results["stages"]["finetune-rt"] and "test_accuracy" in results["stages"]["baseline-probe"]
    )
    resolved = (tmp_path / "run/pretrain-mlm/resolved_config.yaml").read_text()
    assert f"init_embeddings: {tmp_path / 'run/pretrain-sg'}" in resolved
    assert pipeline.run(cfg)["stages_skipped"] == 5


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lr=.inf", "'train.lr' must be a finite number, got inf"),
        ("train.epochs=0", "train: 'epochs' must be >= 1, got 0"),
        ("objective=word2vec", "'objective' must be one of: mlm, clm, rtd, skipgram, cbow; got 'word2vec'"),
        ("model.dim=0", "model: 'dim' must be >= 1"),
        ("model.sample=1.5", "model: 'sample' must be in [0, 1)"),
        ("train.min_lr=1", "train: 'min_lr' (1.0) exceeds 'lr' (0.025)"),
        ("model.layers=2", "unknown key 'model.layers'"),
    ],
)
def test_embedding_recipe_errors(tmp_path, capsys, override, message):
    from nlp_ssl.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("output_dir: out\nobjective: skipgram\ntokenizer: tok\ndata: {datasets: [{files: x.jsonl}]}\n")
    assert main(["pretrain", str(recipe), override]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_min_count_too_high_fails_before_output(tmp_path, topical):
    corpus, tok = topical
    cfg = embedding_config(tmp_path / "out", tok, corpus)
    cfg.model.min_count = 10**9
    with pytest.raises(DataError, match="no token occurs"):
        pretrain.run(cfg)
    assert not (tmp_path / "out").exists()


def test_init_embeddings_with_init_from_is_refused(tmp_path, tiny_corpus, tiny_tokenizer, pretrained, embedding_run):
    from tests.pretrain_helpers import tiny_config

    cfg = tiny_config(tmp_path / "lm", tiny_tokenizer, tiny_corpus, "mlm")
    from nlp_ssl.config import to_dict

    raw = {"init": str(pretrained["mlm"]), "init_embeddings": str(embedding_run)}
    with pytest.raises(ConfigError, match="set one of them"):
        from_dict(type(cfg), {**to_dict(cfg), **raw})


def test_corpus_drops_special_tokens(topical):
    """Every document reaches word2vec as its text tokens only: no <s> / </s> around it."""
    from nlp_ssl.tokenizer import load_tokenizer

    corpus, tok = topical
    tokenizer = load_tokenizer(tok)
    cfg = embedding_config("unused", tok, corpus)
    docs = list(word2vec.load_corpus(cfg, tokenizer))
    special = {str(i) for i in tokenizer.all_special_ids}
    assert docs and not any(special & set(d) for d in docs)
    first = json.loads(corpus.read_text().splitlines()[0])["text"]
    assert docs[0] == [str(i) for i in tokenizer(first, add_special_tokens=False)["input_ids"]]


def test_loss_is_per_trained_token(tmp_path, topical):
    """The logged loss divides gensim's summed pair loss by the tokens trained after
    subsampling (what ``train`` returns first), with one worker so no addition is lost."""
    from gensim.models import Word2Vec

    corpus, tok = topical
    cfg = embedding_config(tmp_path / "emb", tok, corpus, epochs=1)
    cfg.model.sample = 1e-2  # drop a good share of the tokens: the two counts differ
    seen = {}
    real = Word2Vec.train

    def spy(self, *args, **kwargs):
        seen["counts"] = real(self, *args, **kwargs)
        seen["loss"] = self.get_latest_training_loss()
        return seen["counts"]

    import unittest.mock

    with unittest.mock.patch.object(Word2Vec, "train", spy):
        pretrain.run(cfg)
    trained, raw = seen["counts"]
    assert trained < raw
    log = json.loads((tmp_path / "emb/train_log.jsonl").read_text().splitlines()[0])
    assert log["train/loss"] == pytest.approx(seen["loss"] / trained)


def test_pipeline_refuses_a_link_of_the_wrong_kind(tmp_path, tiny_corpus):
    from nlp_ssl import pipeline

    corpus = {"files": str(tiny_corpus)}
    stages = {
        "sg": {"objective": "skipgram", "data": {"datasets": [corpus]}, "model": {"dim": 32}},
        "mlm": {"objective": "mlm", "init": "sg", "data": {"datasets": [corpus], "block_size": 32}},
    }
    with pytest.raises(ConfigError, match="pretrain.mlm.init: 'sg' is not a transformer pretraining stage"):
        from_dict(
            pipeline.PipelineConfig,
            {"run_dir": str(tmp_path / "r"), "tokenizer": {"datasets": [corpus]}, "pretrain": stages},
        )
    stages["mlm"] = {"objective": "mlm", "init_embeddings": "nowhere", "data": {"datasets": [corpus]}}
    with pytest.raises(ConfigError, match="pretrain.mlm.init_embeddings: 'nowhere' is not a pretraining stage"):
        from_dict(
            pipeline.PipelineConfig,
            {"run_dir": str(tmp_path / "r"), "tokenizer": {"datasets": [corpus]}, "pretrain": stages},
        )


def test_export_refuses_an_embedding_run_in_one_line(embedding_run, tmp_path):
    from nlp_ssl.export import export

    with pytest.raises(DataError, match="a skipgram/cbow run; export and push take transformer runs"):
        export(str(embedding_run), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
