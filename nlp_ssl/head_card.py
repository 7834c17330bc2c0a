"""What the model card of a baseline run's head says (``model_card.build_card`` asks here for a
``baseline`` run): what the model is, how to load it without nlp-ssl, how it was fitted, and
what it cannot do."""

from __future__ import annotations

import json


def head_config(record) -> dict:
    from nlp_ssl.head_model import HEAD_CONFIG

    return json.loads((record.model_dir / HEAD_CONFIG).read_text(encoding="utf-8"))


def what_it_is(record) -> str:
    """One phrase: the features and the classifier."""
    blocks = head_config(record)["blocks"]
    cfg = record.config
    parts = []
    if "frozen" in blocks:
        parts.append("frozen, mean-pooled token vectors" + (" of a pretrained encoder" if _transformer(record) else ""))
    if "tfidf" in blocks:
        chars = cfg.get("char_ngrams")
        parts.append("TF-IDF word" + (f" and character ({chars[0]}-{chars[1]})" if chars else "") + " n-grams")
    return " + ".join(parts) + " + logistic regression"


def _transformer(record) -> bool:
    from nlp_ssl.head_model import BODY_DIR

    return (record.model_dir / BODY_DIR / "config.json").is_file()


def summary(record) -> str:
    labels = ", ".join(head_config(record)["labels"])
    return (
        f"A text classifier ({record.kind or 'sentiment'}; labels: {labels}) made of {what_it_is(record)}, "
        "fitted with scikit-learn by nlp-ssl's `baseline` stage. It loads with sentence-transformers and skops "
        "(safe loading, no pickle); no nlp-ssl code is needed."
    )


def usage(record, where: str) -> str:
    """A snippet that loads the folder (a local one, or ``where`` on the Hub) and classifies."""
    blocks = head_config(record)["blocks"]
    tfidf, frozen, hub = "tfidf" in blocks, "frozen" in blocks, where != "PATH_OR_REPO_ID"
    imports = ["import json", *(["import scipy.sparse as sp"] if tfidf and frozen else []), "import skops.io as sio"]
    imports += ["from sentence_transformers import SentenceTransformer"] if frozen else []
    imports += ["from huggingface_hub import snapshot_download"] if hub else []
    load = [
        f'folder = snapshot_download("{where}")'
        if hub
        else 'folder = "PATH"  # this folder; from the Hub: huggingface_hub.snapshot_download("REPO_ID")',
        'head = sio.load(f"{folder}/head.skops")  # vectorizer, scaler, classifier: scikit-learn objects',
        'config = json.load(open(f"{folder}/head_config.json"))',
        *(['body = SentenceTransformer(f"{folder}/body", device="cpu")'] if frozen else []),
    ]
    dense = 'config["dense_weight"] * head["scaler"].transform(body.encode(texts))'
    if tfidf and frozen:
        features = f'sp.hstack([head["vectorizer"].transform(texts), sp.csr_matrix({dense})], format="csr")'
    else:
        features = 'head["vectorizer"].transform(texts)' if tfidf else dense
    use = [
        'texts = ["a gripping, beautifully shot film", "dull and far too long"]',
        f"features = {features}",
        'probabilities = head["classifier"].predict_proba(features)',
        'print([config["labels"][k] for k in probabilities.argmax(axis=1)])',
    ]
    return "\n".join([*imports, "", *load, "", *use])


def training(record) -> str:
    m = record.metrics
    chosen = (
        f"C={m['C']:g}"
        if m.get("C") is not None
        else f"C={m.get('C_tfidf')} (TF-IDF) / {m.get('C_frozen')} (frozen), late fusion"
    )
    weight = f", dense weight {m['dense_weight']:g}" if m.get("dense_weight") is not None else ""
    return (
        f"Fitted on {m.get('train_examples')} labelled examples ({m.get('features')} features); {chosen}{weight}, "
        f"chosen by accuracy on {m.get('selection', 'validation').replace('_', ' ')} "
        f"({m.get('selection_examples')} held-out examples)."
    )


def hyperparameters(record) -> list:
    cfg = record.config
    keys = ("method", "init", "tfidf", "ngram_max", "char_ngrams", "min_df", "max_features", "fusion", "selection")
    from nlp_ssl.model_card import _portable

    shown = [(k, _portable(cfg[k])) for k in keys if cfg.get(k) is not None]
    return shown + [("data.train_samples", cfg.get("data", {}).get("train_samples")), ("seed", cfg.get("seed"))]


def cost(record) -> str:
    m = record.metrics
    if m.get("train_seconds") is None:
        return "not recorded"
    return f"{m['train_seconds']:.0f} seconds on {record.info.get('hardware', 'unknown hardware')}"


LIMITATIONS = (
    "Its features carry no context: a word (or token) counts the same wherever it stands, so negation, "
    "sarcasm and word order are lost beyond the n-grams it saw; words it never saw in training add nothing. "
    "It reads the whole text (no length limit), and it is only as good as its few labels on data unlike them."
)
