"""What a Hugging Face user's default calls do with our folders: ``pipeline()`` on inputs longer
than the model was trained on, for every architecture we save."""

import pytest
from transformers import AutoTokenizer, pipeline

from nlp_ssl import pretrain
from tests.pretrain_helpers import tiny_config

LONG = "a gripping and beautifully shot film " * 80  # ~480 words: far past 32-token blocks


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, tiny_corpus, tiny_tokenizer, pretrained):
    """One tiny masked-LM run per encoder architecture (BERT comes from the shared fixture)."""
    runs = {"bert": pretrained["mlm"]}
    for arch in ("roberta-prelayernorm", "modernbert"):
        out = tmp_path_factory.mktemp(arch) / "run"
        cfg = tiny_config(out, tiny_tokenizer, tiny_corpus, max_steps=2, eval_every=2, save_every=2)
        cfg.model.architecture = arch
        pretrain.run(cfg)
        runs[arch] = out
    return runs


@pytest.mark.parametrize("arch", ["bert", "roberta-prelayernorm", "modernbert"])
def test_fill_mask_truncates_a_long_text_to_what_the_model_was_trained_on(encoders, arch):
    model = encoders[arch] / "model"
    tok = AutoTokenizer.from_pretrained(model)
    assert tok.model_max_length == 32  # the recipe's blocks, not the tokenizer stage's 512
    fill = pipeline("fill-mask", model=str(model))
    out = fill(f"{tok.mask_token} {LONG}", tokenizer_kwargs={"truncation": True}, top_k=2)
    assert len(out) == 2 and all(isinstance(c["score"], float) for c in out)


def test_text_generation_default_call_stays_inside_the_positions(pretrained):
    model = pretrained["clm"] / "model"
    generate = pipeline("text-generation", model=str(model))
    assert generate.model.generation_config.max_length == 32
    text = generate("This movie was")[0]["generated_text"]
    assert text.startswith("This movie was")
    prompt = " ".join(["film"] * 25)  # a prompt close to the limit still generates
    assert generate(prompt)[0]["generated_text"].startswith(prompt)


def test_text_classification_truncates_a_long_review(finetuned):
    classify = pipeline("text-classification", model=str(finetuned / "model"))
    [result] = classify(LONG, truncation=True)
    assert result["label"] in ("negative", "positive")
