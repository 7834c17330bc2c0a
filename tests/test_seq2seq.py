"""Translation / summarization: encoder-decoder assembly from our checkpoints, label masking,
generation-based evaluation with sacrebleu parity, save/reload/generate, bad input."""

import json
import logging
import re

import pytest
import sacrebleu
import torch
from safetensors.torch import load_file

from nlp_ssl import finetune
from nlp_ssl.cli import main
from nlp_ssl.config import dump_yaml
from nlp_ssl.tasks.seq2seq import build_seq2seq
from nlp_ssl.tokenizer import load_tokenizer_for
from tests.finetune_helpers import assert_regenerates_first_prediction, translation_config, write_translation_folder
from tests.helpers import write_jsonl


@pytest.fixture(scope="module")
def translation_dir(tmp_path_factory):
    return write_translation_folder(tmp_path_factory.mktemp("mt"), sizes=(240, 24, 24))


@pytest.fixture(scope="module")
def translated(tmp_path_factory, pretrained, translation_dir):
    out = tmp_path_factory.mktemp("mt-run") / "run"
    finetune.run(translation_config(out, pretrained["mlm"], pretrained["clm"], translation_dir, seed=0))
    return out


def test_encoder_decoder_is_assembled_from_mlm_and_clm_checkpoints(pretrained):
    tok = load_tokenizer_for(str(pretrained["mlm"] / "model"))
    model = build_seq2seq(str(pretrained["mlm"] / "model"), str(pretrained["clm"] / "model"), tok)
    mlm, clm = (load_file(str(pretrained[k] / "model/model.safetensors")) for k in ("mlm", "clm"))
    key = "encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(model.encoder.state_dict()[key], mlm[f"bert.{key}"])
    torch.testing.assert_close(
        model.decoder.state_dict()["transformer.h.0.attn.c_attn.weight"], clm["transformer.h.0.attn.c_attn.weight"]
    )
    assert model.decoder.config.add_cross_attention and model.decoder.config.is_decoder
    assert (model.config.decoder_start_token_id, model.config.eos_token_id, model.config.pad_token_id) == (2, 3, 0)
    assert model.generation_config.decoder_start_token_id == 2 and model.generation_config.num_beams == 4

    bert2bert = build_seq2seq(str(pretrained["mlm"] / "model"), str(pretrained["mlm"] / "model"), tok)
    assert type(bert2bert.decoder).__name__ == "BertLMHeadModel" and bert2bert.decoder.config.add_cross_attention
    torch.testing.assert_close(bert2bert.decoder.bert.encoder.layer[0].attention.self.query.weight, mlm[f"bert.{key}"])
    fresh = build_seq2seq(str(pretrained["mlm"] / "model"), str(pretrained["clm"] / "model"), tok, from_scratch=True)
    assert not torch.allclose(fresh.encoder.state_dict()[key], mlm[f"bert.{key}"])
    encoder_only = build_seq2seq(
        str(pretrained["mlm"] / "model"), str(pretrained["clm"] / "model"), tok, from_scratch="decoder"
    )
    torch.testing.assert_close(encoder_only.encoder.state_dict()[key], mlm[f"bert.{key}"])
    assert not torch.allclose(
        encoder_only.decoder.state_dict()["transformer.h.0.attn.c_attn.weight"],
        clm["transformer.h.0.attn.c_attn.weight"],
    )
    assert encoder_only.decoder.config.add_cross_attention and encoder_only.config.decoder_start_token_id == 2


def test_labels_are_masked_and_decoder_inputs_shifted(translated, pretrained, translation_dir):
    from nlp_ssl.tasks.seq2seq import setup_seq2seq
    from nlp_ssl.training import make_accelerator

    cfg = translation_config(
        translated.parent / "probe",
        pretrained["mlm"],
        pretrained["clm"],
        translation_dir,
        train={"pack_pairs": False, "tracker": "none"},
    )
    task, _ = setup_seq2seq(cfg, make_accelerator(cfg.train, translated.parent / "probe"))
    batch = task.make_batch(torch.arange(8).numpy(), 0, "train").inputs
    labels, decoder_inputs = batch["labels"], batch["decoder_input_ids"]
    lengths = (labels != -100).sum(1)
    assert lengths.min() < labels.size(1)  # some rows are padded ...
    for row, n in enumerate(lengths.tolist()):  # ... with -100, and every target ends with EOS
        assert (labels[row, n:] == -100).all() and labels[row, n - 1] == 3
    assert (decoder_inputs[:, 0] == 2).all()
    assert torch.equal(decoder_inputs[:, 1:], torch.where(labels[:, :-1] == -100, 0, labels[:, :-1]))


def test_translation_run_scores_with_sacrebleu_and_writes_predictions(translated):
    from nlp_ssl.train_log import read_log

    metrics = json.loads((translated / "metrics.json").read_text())
    rows = [json.loads(l) for l in (translated / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and set(rows[0]) == {"source", "reference", "hypothesis"}
    hyps, refs = [r["hypothesis"] for r in rows], [r["reference"] for r in rows]
    assert metrics["test_bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert metrics["test_chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    losses = [r["eval/loss"] for r in read_log(translated) if "eval/loss" in r]
    assert losses[-1] < losses[0] - 0.5  # it learned
    config = json.loads((translated / "model/config.json").read_text())
    assert config["nlp_ssl"] == {
        "task": "translation",
        "source_column": "translation.en",
        "target_column": "translation.xx",
    }


def test_saved_model_reloads_and_generates_the_same(translated):
    from transformers import AutoModelForSeq2SeqLM, EncoderDecoderModel

    for cls in (AutoModelForSeq2SeqLM, EncoderDecoderModel):
        model = cls.from_pretrained(translated / "model").eval()
        assert model.generation_config.num_beams == 2 and model.generation_config.max_new_tokens == 16
        assert_regenerates_first_prediction(translated, translated / "model", model)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing language key", r"row 5: column 'translation.xx' is null, expected text"),
        ("empty target", r"row 2: column 'translation.xx' is empty, expected a target text"),
        ("empty source", r"row 3: column 'translation.en' is empty, expected a source text"),
    ],
)
def test_bad_pairs_fail_clearly(tmp_path, pretrained, case, message, capsys):
    data = write_translation_folder(tmp_path / "data", sizes=(40, 8, 8))
    rows = [json.loads(l) for l in (data / "train.jsonl").read_text().splitlines()]
    if case == "missing language key":
        del rows[5]["translation"]["xx"]
    elif case == "empty target":
        rows[2]["translation"]["xx"] = "  "
    else:
        rows[3]["translation"]["en"] = ""
    write_jsonl(data / "train.jsonl", rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(dump_yaml(translation_config(tmp_path / "run", pretrained["mlm"], pretrained["clm"], data)))
    assert main(["finetune", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_evaluate_and_predict_work_for_the_encoder_decoder(tmp_path, translated, translation_dir, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(translated), str(translation_dir), "--output-dir", str(out)]) == 0
    scored = json.loads((out / "metrics.json").read_text())
    trained = json.loads((translated / "metrics.json").read_text())
    assert scored["bleu"] == pytest.approx(trained["test_bleu"]) and scored["chrf"] == pytest.approx(
        trained["test_chrf"]
    )
    rows = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    capsys.readouterr()
    assert main(["predict", str(translated), rows[0]["source"], rows[1]["source"], "--json"]) == 0
    printed = [json.loads(l) for l in capsys.readouterr().out.strip().splitlines()]
    assert [p["output"] for p in printed] == [rows[0]["hypothesis"], rows[1]["hypothesis"]]


def test_export_card_carries_bleu_and_chrf_and_the_folder_generates(tmp_path, translated):
    from huggingface_hub import ModelCard

    from nlp_ssl.export import export

    out = export(str(translated), str(tmp_path / "export"), repo_id="someone/mt")
    metrics = json.loads((translated / "metrics.json").read_text())
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "translation" and card.data.language == ["en", "xx"]
    got = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert {r.task_name for r in card.data.eval_results} == {"Translation"}
    for split in ("validation", "test"):
        for key in ("bleu", "chrf"):
            assert got[(split, key)] == pytest.approx(metrics[f"{split}_{key}"], abs=1e-6)
    assert "fine-tuned for en -> xx translation from the encoder" in card.text
    assert 'AutoModelForSeq2SeqLM.from_pretrained("someone/mt")' in card.text
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "README.md",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    assert_regenerates_first_prediction(translated, out)


def test_modernbert_encoder_with_a_gpt2_decoder_trains_and_reloads(
    tmp_path, tiny_corpus, tiny_tokenizer, pretrained, translation_dir
):
    """The default English MLM recipe pretrains a ModernBERT encoder; the summarization warm
    start pairs it with our GPT-2 decoder, so that pairing must assemble, learn, save and
    generate after a reload."""
    from transformers import AutoModelForSeq2SeqLM

    from nlp_ssl import pretrain
    from nlp_ssl.train_log import read_log
    from tests.pretrain_helpers import tiny_config

    cfg = tiny_config(tmp_path / "mb", tiny_tokenizer, tiny_corpus, "mlm", max_steps=4, save_every=4)
    cfg.model.architecture = "modernbert"
    pretrain.run(cfg)
    out = tmp_path / "mt"
    finetune.run(translation_config(out, tmp_path / "mb", pretrained["clm"], translation_dir, seed=0))
    losses = [r["eval/loss"] for r in read_log(out) if "eval/loss" in r]
    assert losses[-1] < losses[0] - 0.5
    model = AutoModelForSeq2SeqLM.from_pretrained(out / "model").eval()
    assert type(model.encoder).__name__ == "ModernBertModel" and type(model.decoder).__name__ == "GPT2LMHeadModel"
    assert_regenerates_first_prediction(out, out / "model", model)


def test_training_and_scoring_print_no_expected_noise(tmp_path, pretrained, translation_dir):
    """What a user would read as a fault and is not: the padded-decoder-input warning (the
    decoder gets its mask) and accelerate's note on tied weights at each checkpoint."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()  # an earlier test may have printed it once for this process
    records = []
    catch = logging.Handler()
    catch.emit = records.append
    for name in ("transformers", "accelerate"):
        logging.getLogger(name).addHandler(catch)
    try:
        for decoder in ("clm", "mlm"):  # GPT-2 and BERT decoders
            cfg = translation_config(
                tmp_path / decoder, pretrained["mlm"], pretrained[decoder], translation_dir, seed=0
            )
            cfg.train.epochs = 1
            finetune.run(cfg)
    finally:
        for name in ("transformers", "accelerate"):
            logging.getLogger(name).removeHandler(catch)
    said = "\n".join(r.getMessage() for r in records)
    assert "strongly recommend passing in an `attention_mask`" not in said
    assert "Removed shared tensor" not in said


def test_the_card_snippet_handles_a_text_longer_than_the_encoder(translated, capsys):
    """The model card's code, run as a user pastes it, on a source far past the encoder's
    positions: the tokenizer cuts it to the trained length and generation stays inside the
    decoder's positions."""
    from transformers import AutoTokenizer

    from nlp_ssl.tasks.seq2seq import TRANSLATION

    model_dir = translated / "model"
    long_text = "a man is riding a bicycle down the street " * 60
    code = TRANSLATION.usage(str(model_dir)).replace("A man is riding a bicycle down the street.", long_text)
    exec(compile(code, "model card snippet", "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("[") and printed.endswith("]"), printed
    tok = AutoTokenizer.from_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    assert tok.model_max_length <= config["encoder"]["max_position_embeddings"]
    generation = json.loads((model_dir / "generation_config.json").read_text())
    decoded = generation.get("max_length") or 1 + generation["max_new_tokens"]  # the start token, then new ones
    assert decoded <= config["decoder"].get("n_positions", config["decoder"].get("max_position_embeddings"))


@pytest.mark.parametrize(
    "from_scratch,summary,base",
    [
        ("decoder", "from the encoder `me/enc` and a fresh decoder.", "me/enc"),
        (True, "from fresh weights (no pretraining).", None),
        (False, "from the encoder `me/enc` and the decoder `me/dec`", ["me/enc", "me/dec"]),
    ],
)
def test_an_encoder_decoder_card_names_the_halves_that_were_pretrained(
    tmp_path, translated, pretrained, from_scratch, summary, base
):
    """``from_scratch: decoder`` names the encoder as its start and as its only base model."""
    import shutil

    import yaml
    from huggingface_hub import ModelCard

    from nlp_ssl.export import export
    from nlp_ssl.model_card import find_run, pushed_base_model

    starts = {}
    for key, name, repo in (("init", "mlm", "me/enc"), ("init_decoder", "clm", "me/dec")):
        starts[key] = tmp_path / name
        shutil.copytree(pretrained[name], starts[key])
        (starts[key] / "pushed.json").write_text(json.dumps({"repo_id": repo, "revision": "main"}))
    run = tmp_path / "run"
    shutil.copytree(translated, run)
    recipe = yaml.safe_load((run / "resolved_config.yaml").read_text())
    recipe.update({"from_scratch": from_scratch, **{k: str(v) for k, v in starts.items()}})
    (run / "resolved_config.yaml").write_text(yaml.safe_dump(recipe))
    assert pushed_base_model(find_run(str(run))) == base
    card = ModelCard.load(export(str(run), str(tmp_path / "out")) / "README.md")
    assert summary in next(line for line in card.text.splitlines() if "fine-tuned for" in line)


def test_from_scratch_takes_true_false_or_decoder(tmp_path, pretrained):
    from nlp_ssl.config import ConfigError

    data = write_translation_folder(tmp_path / "mt", sizes=(8, 2, 2))
    assert (
        translation_config(tmp_path / "a", pretrained["mlm"], None, data, from_scratch="decoder").from_scratch
        == "decoder"
    )
    for bad in (1, "Decoder", "encoder"):
        with pytest.raises(ConfigError, match="'from_scratch' must be"):
            translation_config(tmp_path / "a", pretrained["mlm"], None, data, from_scratch=bad)


def _tiny_encoder_decoder(encoder: str, decoder: str, attention: str = "sdpa"):
    from transformers import (
        BertConfig,
        CamembertConfig,
        EncoderDecoderConfig,
        EncoderDecoderModel,
        GPT2Config,
        ModernBertConfig,
        RobertaConfig,
        RobertaPreLayerNormConfig,
        XLMRobertaConfig,
    )

    shape = {"vocab_size": 50, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    encoders = {
        "bert": lambda: BertConfig(**shape, num_hidden_layers=2, max_position_embeddings=64, pad_token_id=0),
        # a window of 8 (4 each side), shorter than the sources: its local layers are exercised
        "modernbert": lambda: ModernBertConfig(
            **shape,
            num_hidden_layers=3,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            cls_token_id=2,
            sep_token_id=3,
            local_attention=8,
            global_attn_every_n_layers=2,
        ),
        # positions counted from pad_token_id + 1 (70 = 64 + 1 + room)
        **{
            kind: (lambda c=c: c(**shape, num_hidden_layers=2, max_position_embeddings=70, pad_token_id=0))
            for kind, c in (
                ("roberta-prelayernorm", RobertaPreLayerNormConfig),
                ("roberta", RobertaConfig),
                ("xlm-roberta", XLMRobertaConfig),
                ("camembert", CamembertConfig),
            )
        },
    }
    decoders = {
        "gpt2": lambda: GPT2Config(
            vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=2, eos_token_id=3
        ),
        "bert": encoders["bert"],
        **{kind: encoders[kind] for kind in ("roberta-prelayernorm", "roberta", "xlm-roberta", "camembert")},
    }
    dec = decoders[decoder]()
    dec.is_decoder, dec.add_cross_attention = True, True
    torch.manual_seed(0)
    model = EncoderDecoderModel(config=EncoderDecoderConfig.from_encoder_decoder_configs(encoders[encoder](), dec))
    model.config.decoder_start_token_id, model.config.pad_token_id = 2, 0
    if attention != "sdpa":
        model.set_attn_implementation(attention)
    return model


def _pairs(n=12, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        {
            "input_ids": rng.integers(4, 50, rng.integers(2, 20)).tolist(),
            "labels": rng.integers(4, 50, rng.integers(2, 25)).tolist(),
        }
        for _ in range(n)
    ]


def _padded(pairs) -> dict:
    """The same pairs one per row, as ``DataCollatorForSeq2Seq`` lays them out."""
    source, target = max(len(p["input_ids"]) for p in pairs), max(len(p["labels"]) for p in pairs)
    labels = torch.tensor([p["labels"] + [-100] * (target - len(p["labels"])) for p in pairs])
    return {
        "input_ids": torch.tensor([p["input_ids"] + [0] * (source - len(p["input_ids"])) for p in pairs]),
        "attention_mask": torch.tensor(
            [[1] * len(p["input_ids"]) + [0] * (source - len(p["input_ids"])) for p in pairs]
        ),
        "labels": labels,
        "decoder_input_ids": torch.cat([torch.full((len(pairs), 1), 2), labels[:, :-1].clamp(min=0)], 1),
    }


@pytest.mark.parametrize(
    "encoder,decoder,attention",
    [
        ("bert", "gpt2", "sdpa"),
        ("bert", "gpt2", "eager"),
        ("modernbert", "gpt2", "sdpa"),
        ("roberta-prelayernorm", "gpt2", "sdpa"),
        ("roberta-prelayernorm", "roberta-prelayernorm", "sdpa"),
        ("modernbert", "bert", "eager"),
        ("bert", "bert", "sdpa"),
        ("roberta", "roberta", "eager"),
        ("xlm-roberta", "camembert", "sdpa"),
        ("camembert", "xlm-roberta", "eager"),
    ],
)
def test_packed_rows_give_the_padded_batch_loss_and_gradients(encoder, decoder, attention):
    from nlp_ssl.tasks.pair_packing import pack_pairs, unsupported
    from nlp_ssl.tasks.seq2seq import Seq2SeqLoss

    model = _tiny_encoder_decoder(encoder, decoder, attention).eval()
    assert unsupported(model) is None
    loss, pairs = Seq2SeqLoss(model), _pairs()
    packed = pack_pairs(pairs, model.config, source_width=40, target_width=40, pad_id=0, start_id=2)
    assert packed["input_ids"].size(0) < len(pairs)  # several pairs share rows
    results = []
    for inputs in (_padded(pairs), packed):
        model.zero_grad()
        value = loss(**inputs)
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (padded_loss, padded_grads), (packed_loss, packed_grads) = results
    torch.testing.assert_close(packed_loss, padded_loss, rtol=1e-5, atol=1e-4)
    assert len(packed_grads) == len(padded_grads)
    for a, b in zip(packed_grads, padded_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)

    # rows padded to a multiple of 8 (as on GPUs) change nothing
    wide = pack_pairs(pairs, model.config, source_width=40, target_width=40, pad_id=0, start_id=2, pad_to_multiple_of=8)
    assert wide["input_ids"].size(1) % 8 == 0 and wide["labels"].size(1) % 8 == 0
    assert wide["input_ids"].size(1) > packed["input_ids"].size(1) or wide["labels"].size(1) > packed["labels"].size(1)
    with torch.no_grad():
        torch.testing.assert_close(loss(**wide), padded_loss, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="non-empty source and target"):
        pack_pairs(
            [*pairs, {"input_ids": [], "labels": [5]}],
            model.config,
            source_width=40,
            target_width=40,
            pad_id=0,
            start_id=2,
        )

    # the control: the same comparison catches a target that may look at every source of its row
    leaky = dict(packed, cross_attention_mask=torch.ones_like(packed["cross_attention_mask"]))
    model.zero_grad()
    loss(**leaky).backward()
    leaky_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    with pytest.raises(AssertionError):
        for a, b in zip(leaky_grads, padded_grads):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_eager_attention_takes_packed_masks_in_the_dtype_its_weights_run_in():
    """A bf16 model (DeepSpeed casts the weights, no autocast): the additive masks are bf16 too."""
    from nlp_ssl.tasks.pair_packing import pack_pairs
    from nlp_ssl.tasks.seq2seq import Seq2SeqLoss

    model = _tiny_encoder_decoder("bert", "bert", "eager").eval().to(torch.bfloat16)
    loss, pairs = Seq2SeqLoss(model), _pairs()
    with torch.no_grad():
        packed = loss(**pack_pairs(pairs, model.config, source_width=40, target_width=40, pad_id=0, start_id=2))
        torch.testing.assert_close(packed, loss(**_padded(pairs)), rtol=1e-2, atol=0.0)


def test_rows_hold_every_pair_once_within_the_widths():
    import numpy as np

    from nlp_ssl.tasks.pair_packing import assign_rows

    rng = np.random.default_rng(1)
    source, target = rng.integers(2, 30, 64), rng.integers(2, 20, 64)
    rows = assign_rows(source, target, 32, 24)
    assert sorted(i for row in rows for i in row) == list(range(64))
    assert all(source[row].sum() <= 32 and target[row].sum() <= 24 for row in map(np.array, rows))
    assert len(rows) < 40  # not one pair per row
    assert assign_rows([32, 32], [1, 1], 32, 24) == [[0], [1]]  # a full row takes nothing more


def test_packing_is_refused_for_architectures_it_was_not_verified_on(
    tmp_path, pretrained, translation_dir, monkeypatch, caplog
):
    from nlp_ssl.errors import ConfigError
    from nlp_ssl.tasks.pair_packing import unsupported
    from nlp_ssl.tasks.seq2seq import setup_seq2seq
    from nlp_ssl.training import make_accelerator

    model = _tiny_encoder_decoder("bert", "gpt2")
    model.config.encoder.model_type = "t5"
    assert "encoder is a 't5' model" in unsupported(model)
    model = _tiny_encoder_decoder("bert", "gpt2")
    model.config.decoder._attn_implementation = "flex_attention"
    assert "'flex_attention' attention" in unsupported(model)
    assert unsupported(_tiny_encoder_decoder("bert", "gpt2")) is None

    cfg = translation_config(
        tmp_path / "run",
        pretrained["mlm"],
        pretrained["clm"],
        translation_dir,
        train={"pack_pairs": True, "epochs": 1, "tracker": "none"},
    )
    task, _ = setup_seq2seq(cfg, make_accelerator(cfg.train, tmp_path / "run"))
    assert task.pack_widths == (32, 24)
    default = translation_config(tmp_path / "run", pretrained["mlm"], pretrained["clm"], translation_dir)
    assert default.train.pack_pairs is None
    task, _ = setup_seq2seq(default, make_accelerator(default.train, tmp_path / "run"))
    assert task.pack_widths == (32, 24)  # the default packs where the model allows it
    monkeypatch.setattr("nlp_ssl.tasks.pair_packing.PACKABLE_DECODERS", ("bert",))
    with pytest.raises(ConfigError, match=r"'train.pack_pairs': the decoder is a 'gpt2' model .*set it to false"):
        setup_seq2seq(cfg, make_accelerator(cfg.train, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    # by default, a model packing does not support trains one pair per row, and says so
    ours = logging.getLogger("nlp_ssl")  # after an in-process CLI call it no longer propagates to caplog's
    ours.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="nlp_ssl.tasks.seq2seq"):
            task, _ = setup_seq2seq(default, make_accelerator(default.train, tmp_path / "run"))
    finally:
        ours.removeHandler(caplog.handler)
    assert task.pack_widths is None
    assert "one pair per row, padded: the decoder is a 'gpt2' model" in caplog.text


def test_a_packed_run_trains_as_the_padded_run_does(tmp_path, pretrained, translation_dir, monkeypatch):
    """Same seed, same random batches, no dropout: the logged losses agree to rounding."""
    from nlp_ssl.tasks import pair_packing
    from nlp_ssl.train_log import read_log

    rows = []

    def counted(examples, *args, **kwargs):
        inputs = original(examples, *args, **kwargs)
        rows.append((len(examples), inputs["input_ids"].size(0)))
        return inputs

    original = pair_packing.pack_pairs
    monkeypatch.setattr(pair_packing, "pack_pairs", counted)
    losses = {}
    for pack in (False, True):
        out = tmp_path / f"pack-{pack}"
        finetune.run(
            translation_config(
                out,
                pretrained["mlm"],
                pretrained["clm"],
                translation_dir,
                train={
                    "max_steps": 4,
                    "epochs": None,
                    "micro_batch_size": 8,
                    "grad_accum_steps": 2,
                    "lr": 3e-3,
                    "tracker": "none",
                    "log_every": 1,
                    "warmup_ratio": 0.1,
                    "group_by_length": False,
                    "pack_pairs": pack,
                    "eval_every": 4,
                    "save_every": 4,
                },
            )
        )
        losses[pack] = [r["train/loss"] for r in read_log(out) if "train/loss" in r]
        if not pack:
            assert not rows
    assert len(rows) == 8 and all(packed < pairs for pairs, packed in rows)  # every micro-batch packed, fewer rows
    assert len(losses[True]) == 4 and losses[False][0] != losses[False][-1]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
