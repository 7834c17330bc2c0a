"""Recipe loading: typed, strict, overridable; every shipped recipe stays loadable."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from nlp_ssl.cli import STAGES
from nlp_ssl.config import apply_override, dump_yaml, load_recipe
from nlp_ssl.errors import ConfigError
from nlp_ssl.tokenizer import TokenizerConfig

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    kind: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    items: list[Inner] = field(default_factory=list)
    flag: bool = False
    maybe: int | None = None
    either: str | list[str] = "x"


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_good_recipe_fills_defaults_and_nests(tmp_path):
    cfg = load_recipe(Outer, write(tmp_path, "name: n\ninner: {lr: 0.1}\nitems: [{steps: 3}, {kind: b}]\n"))
    assert cfg.name == "n" and cfg.inner.lr == 0.1 and cfg.inner.steps == 10
    assert [i.steps for i in cfg.items] == [3, 10] and cfg.items[1].kind == "b"
    assert cfg.flag is False and cfg.maybe is None


def test_unknown_key_names_it_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'inner.stpes'; did you mean 'inner.steps'\?"):
        load_recipe(Outer, write(tmp_path, "name: n\ninner: {stpes: 3}\n"))
    with pytest.raises(ConfigError, match=r"r.yaml: unknown key 'flagg'; did you mean 'flag'"):
        load_recipe(Outer, write(tmp_path, "name: n\nflagg: true\n"))


def test_unknown_key_inside_list_item(tmp_path):
    with pytest.raises(ConfigError, match=r"'items.0.lrr'"):
        load_recipe(Outer, write(tmp_path, "name: n\nitems: [{lrr: 1}]\n"))


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("name: n\ninner: {steps: many}\n", r"'inner.steps' must be an integer, got str 'many'"),
        ("name: n\nflag: yes please\n", r"'flag' must be true or false"),
        ("name: 3\n", r"'name' must be a string, got int 3"),
        ("name: n\ninner: {kind: c}\n", r"'inner.kind' must be one of 'a', 'b', got 'c'"),
        ("name: n\nitems: {steps: 1}\n", r"'items' must be a list"),
        ("name: n\ninner: 5\n", r"inner must be a mapping"),
        ("name: n\nmaybe: 1.5\n", r"'maybe' must be an integer or null"),
        ("inner: {}\n", r"missing required key 'name'"),
        ("- a\n- b\n", r"must be a mapping of keys to values"),
        ("name: [unclosed\n", r"line \d+.* not valid YAML"),
    ],
)
def test_bad_recipes_fail_with_the_key(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_recipe(Outer, write(tmp_path, text))


def test_numbers_are_read_leniently_where_safe(tmp_path):
    cfg = load_recipe(Outer, write(tmp_path, "name: n\ninner: {lr: 3e-4, steps: 1e3}\n"))
    assert cfg.inner.lr == pytest.approx(3e-4) and cfg.inner.steps == 1000 and isinstance(cfg.inner.steps, int)


def test_union_of_str_and_list(tmp_path):
    assert load_recipe(Outer, write(tmp_path, "name: n\neither: [a, b]\n")).either == ["a", "b"]
    assert load_recipe(Outer, write(tmp_path, "name: n\neither: a\n")).either == "a"


def test_dotted_overrides(tmp_path):
    path = write(tmp_path, "name: n\nitems: [{steps: 3}]\n")
    cfg = load_recipe(Outer, path, ["inner.lr=0.5", "items.0.kind=b", "flag=true", "name=other", "maybe=null"])
    assert cfg.inner.lr == 0.5 and cfg.items[0].kind == "b" and cfg.flag is True and cfg.name == "other"
    with pytest.raises(ConfigError, match=r"unknown key 'inner.lrate'"):
        load_recipe(Outer, path, ["inner.lrate=1"])
    with pytest.raises(ConfigError, match=r"index 4 out of range"):
        load_recipe(Outer, path, ["items.4.steps=1"])
    with pytest.raises(ConfigError, match=r"expected key.sub=value"):
        load_recipe(Outer, path, ["inner.lr"])
    with pytest.raises(ConfigError, match=r"'name' is a value, not a section"):
        load_recipe(Outer, path, ["name.x=1"])


def test_override_values_are_yaml():
    raw = {}
    apply_override(raw, "a.b=[1, 2]")
    apply_override(raw, "a.c=text with spaces")
    apply_override(raw, "d=")
    assert raw == {"a": {"b": [1, 2], "c": "text with spaces"}, "d": ""}


def test_value_checks_name_the_key(tmp_path):
    base = "output_dir: o\ndatasets: [{files: x.txt}]\n"
    with pytest.raises(ConfigError, match=r"'vocab_size' must exceed 261"):
        load_recipe(TokenizerConfig, write(tmp_path, base + "vocab_size: 100\n"))
    with pytest.raises(ConfigError, match=r"datasets.0: a dataset needs exactly one of 'name'"):
        load_recipe(TokenizerConfig, write(tmp_path, "output_dir: o\ndatasets: [{}]\n"))
    with pytest.raises(ConfigError, match=r"'datasets' must list at least one dataset"):
        load_recipe(TokenizerConfig, write(tmp_path, "output_dir: o\ndatasets: []\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_recipe(TokenizerConfig, REPO / "recipes/tokenizer/bpe_imdb.yaml", ["vocab_size=1000"])
    again = load_recipe(TokenizerConfig, write(tmp_path, dump_yaml(cfg)))
    assert again == cfg


def _recipes():
    return sorted((REPO / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("path", _recipes(), ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_every_shipped_recipe_loads(path):
    import importlib

    stage_name = path.relative_to(REPO / "recipes").parts[0]
    stage = STAGES.get(stage_name)
    assert stage is not None, f"recipes/{stage_name}/ does not match a stage ({', '.join(STAGES)})"
    load_recipe(getattr(importlib.import_module(stage.module), stage.config), path)


@pytest.mark.parametrize(
    "stage, raw, old, new",
    [
        ("pretrain", {"objective": "mlm"}, "init_from", "init"),
        ("finetune", {"task": "translation"}, "encoder", "init"),
        ("finetune", {"task": "summarization"}, "decoder", "init_decoder"),
    ],
)
def test_a_renamed_key_names_its_new_name(tmp_path, stage, raw, old, new):
    module = __import__(STAGES[stage].module, fromlist=["recipe_class"])
    cls = module.recipe_class(raw, "r.yaml")
    path = tmp_path / "r.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in {**raw, "output_dir": "out", old: "runs/x"}.items()))
    with pytest.raises(ConfigError, match=rf"unknown key '{old}'; it was renamed '{new}'"):
        load_recipe(cls, path)


def test_keys_lists_every_recipe_key_with_default_and_help(capsys):
    from nlp_ssl.cli import main

    assert main(["finetune", "--keys", "task=sentiment"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# task: sentiment\n")
    assert "\ninit = required  Model to start from:" in out
    assert "\ndata.max_length = 128  Tokens per model input; a longer text is read in windows of this many" in out
    assert "\ndata.long_texts = windows  A text longer than ``max_length``: ``windows``, read whole" in out
    assert "\ntrain.lr = 0.0001\n" in out
    assert main(["pretrain", "--keys"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("# ")] == [
        "# objective: mlm",
        "# objective: clm",
        "# objective: rtd",
        "# objective: skipgram",
        "# objective: cbow",
    ]
    assert "masking.probability = 0.15" in out.split("# objective: clm")[0]  # the mlm recipe has masking
    assert "masking." not in out.split("# objective: clm")[1].split("# objective: rtd")[0]  # clm's has not
    with pytest.raises(SystemExit):
        main(["pretrain"])  # no recipe, no --keys: argparse's usage error


@pytest.mark.parametrize(
    "objective, section, where", [("clm", "masking", "objectives mlm and rtd"), ("mlm", "rtd", "objective rtd")]
)
def test_a_section_of_another_objective_says_whose_it_is(tmp_path, objective, section, where):
    """Recipes saved before the objective sections moved carry every section: the error says
    which objective a section belongs to instead of only 'unknown key'."""
    from nlp_ssl.pretrain import recipe_class

    raw = {"objective": objective, "output_dir": "out", "tokenizer": "tok", section: {}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"unknown key '{section}'; it applies to {where} only: remove it"):
        load_recipe(recipe_class(raw, "r.yaml"), path)


def test_an_old_saved_recipe_is_upgraded_section_by_section():
    from nlp_ssl.config import from_dict, upgrade
    from nlp_ssl.objectives.word2vec import EmbeddingPretrainConfig
    from nlp_ssl.tasks.seq2seq import TranslationConfig

    old = {
        "output_dir": "o",
        "task": "translation",
        "encoder": "e",
        "retired_section": {"a": 1},
        "data": {"train": {"name": "d"}, "source_lang": "en", "target_lang": "de"},
        "train": {"epochs": 2, "retired_key": 3},
    }
    new = upgrade(TranslationConfig, old)
    assert new["init"] == "e" and "encoder" not in new and "retired_section" not in new  # top level
    # keys added since take the value old runs had; the retired key is dropped
    assert new["train"] == {
        "group_by_length": False,
        "eval_batch_size": None,
        "length_group_batches": 50,
        "pack_pairs": False,
        "epochs": 2,
    }
    assert new["data"] == old["data"]
    assert from_dict(TranslationConfig, new).train.length_group_batches == 50
    # sections in a list too
    tokenizer = upgrade(TokenizerConfig, {"output_dir": "o", "datasets": [{"name": "a", "retired": 1}, {"name": "b"}]})
    assert tokenizer["datasets"] == [{"name": "a"}, {"name": "b"}]
    # a section that is not the engine's gets none of its added keys
    skipgram = upgrade(
        EmbeddingPretrainConfig,
        {
            "output_dir": "o",
            "objective": "skipgram",
            "tokenizer": "t",
            "data": {"datasets": [{"name": "d"}]},
            "train": {"epochs": 1},
        },
    )
    assert skipgram["train"] == {"epochs": 1}


def test_the_reference_table_of_training_defaults_is_the_classes():
    """docs/reference.md lists each setting whose default differs between stages, once per
    stage; the table and the section classes must agree, and no differing setting is missing."""
    import dataclasses
    import re
    from pathlib import Path

    import yaml

    from nlp_ssl.tasks.base import FinetuneTrainConfig
    from nlp_ssl.tasks.seq2seq import Seq2SeqTrainConfig
    from nlp_ssl.training.config import TrainConfig

    classes = (TrainConfig, FinetuneTrainConfig, Seq2SeqTrainConfig)
    defaults = [{f.name: f.default for f in dataclasses.fields(c) if f.init} for c in classes]
    differing = {k for k in defaults[0] if len({repr(d[k]) for d in defaults}) > 1}
    text = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\s*\| `(\w+)` \| (.+?) \| (.+?) \| (.+?) \|$", text, flags=re.M)
    table = {key: [yaml.safe_load(v.split(" (")[0]) for v in values] for key, *values in rows}
    assert set(table) == differing
    for key, shown in table.items():
        assert shown == [d[key] for d in defaults], key
