"""What ``--overwrite`` may replace (only a finished or interrupted nlp-ssl output of the kind the
command writes), paths taken as typed, and the lines a command reads and prints."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from nlp_ssl.cli import main
from nlp_ssl.config import apply_override
from nlp_ssl.errors import OutputError
from nlp_ssl.outputs import output_kind, refuse_replacing
from tests.helpers import hashes


def someones_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "results.csv").write_text("a,b\n1,2\n")
    (path / "sub").mkdir()
    (path / "sub" / "notes.md").write_text("mine")
    return path


def sentiment_data(sentiment_dir) -> dict:
    return {
        "train": {"name": str(sentiment_dir), "split": "train"},
        "validation": {"name": str(sentiment_dir), "split": "validation"},
        "labels": ["negative", "positive"],
    }


def commands(tmp: Path, out: Path, ctx) -> dict[str, list[str]]:
    """Every command that writes a folder, pointed at ``out`` with ``--overwrite``."""
    tiny, corpus, mlm, finetuned, sentiment = ctx

    def recipe(name: str, raw: dict) -> str:
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    pretrain = {
        "output_dir": str(out),
        "tokenizer": str(tiny),
        "objective": "mlm",
        "data": {"datasets": [{"files": str(corpus)}], "block_size": 32, "validation_fraction": 0.1},
        "model": {"preset": "tiny", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 64},
        "train": {"max_steps": 2, "micro_batch_size": 4, "tracker": "none"},
    }
    finetune = {
        "output_dir": str(out),
        "task": "sentiment",
        "init": str(mlm),
        "data": {**sentiment_data(sentiment), "max_length": 32},
        "train": {"epochs": 1, "tracker": "none"},
    }
    stage = {k: v for k, v in finetune.items() if k != "output_dir"}
    return {
        "tokenizer": [
            "tokenizer",
            recipe("tok", {"output_dir": str(out), "vocab_size": 300, "datasets": [{"files": str(corpus)}]}),
        ],
        "pretrain": ["pretrain", recipe("pre", pretrain)],
        "finetune": ["finetune", recipe("ft", finetune)],
        "baseline": [
            "baseline",
            recipe("base", {"output_dir": str(out), "data": sentiment_data(sentiment), "C": [1.0]}),
        ],
        "evaluate": ["evaluate", str(finetuned), str(sentiment), "--output-dir", str(out)],
        "export": ["export", str(finetuned), str(out)],
        # a pipeline replaces a stage folder whose recipe changed: never one that is not its own
        "pipeline": [
            "pipeline",
            recipe("pipe", {"run_dir": str(out.parent), "finetune": {out.name.removeprefix("finetune-"): stage}}),
        ],
    }


@pytest.fixture
def ctx(tiny_tokenizer, tiny_corpus, pretrained, finetuned, sentiment_dir):
    return tiny_tokenizer, tiny_corpus, pretrained["mlm"], finetuned, sentiment_dir


@pytest.mark.parametrize("command", ["tokenizer", "pretrain", "finetune", "baseline", "evaluate", "export", "pipeline"])
def test_overwrite_never_replaces_a_folder_nlp_ssl_did_not_write(tmp_path, ctx, capsys, command):
    target = someones_folder(tmp_path / "runs" / "finetune-rt")
    before = hashes(tmp_path / "runs")
    argv = commands(tmp_path, target, ctx)[command]
    code = main(argv + ["--overwrite"] if command != "pipeline" else argv)
    err = capsys.readouterr().err
    assert code == 2, err[-500:]
    if command == "pipeline":  # refused before any stage: its run folder holds someone's files
        assert f"run_dir {target.parent} holds files no nlp-ssl pipeline wrote (finetune-rt)" in err
    else:
        assert f"will not replace {target}: it is not an nlp-ssl output" in err
    assert hashes(tmp_path / "runs") == before


def test_overwrite_replaces_its_own_kind_only(tmp_path, ctx, capsys):
    """A finished tokenizer run is replaced by a tokenizer run, and refused by every other command."""
    target = tmp_path / "runs" / "finetune-rt"
    argv = commands(tmp_path, target, ctx)
    assert main(argv["tokenizer"]) == 0
    before = hashes(target)
    for command in ("pretrain", "finetune", "baseline", "evaluate", "export"):
        capsys.readouterr()
        assert main(argv[command] + ["--overwrite"]) == 2, command
        article = "an" if command[0] in "aeiou" else "a"
        assert f"it is an nlp-ssl tokenizer output, not {article} {command} one" in capsys.readouterr().err
        assert hashes(target) == before
    assert main(argv["tokenizer"] + ["--overwrite", "vocab_size=310"]) == 0
    assert json.loads((target / "metrics.json").read_text())["vocab_size"] == 310


def test_what_nlp_ssl_wrote_is_told_by_its_files(tmp_path, pretrained, finetuned):
    assert output_kind(pretrained["mlm"]) == "pretrain" and output_kind(finetuned) == "finetune"
    interrupted = tmp_path / "interrupted"
    shutil.copytree(pretrained["mlm"], interrupted)
    (interrupted / "run_info.json").unlink()
    (interrupted / "metrics.json").unlink()
    assert output_kind(interrupted) == "pretrain"  # replaced by a fresh pretraining with --overwrite
    refuse_replacing(interrupted, "pretrain")
    assert output_kind(someones_folder(tmp_path / "mine")) is None
    assert main(["export", str(finetuned), str(tmp_path / "exported")]) == 0
    assert output_kind(tmp_path / "exported") == "export"


def test_overwrite_never_replaces_a_root_the_home_the_working_directory_or_a_repository(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "home" / "code" / "project"
    work.mkdir(parents=True)
    (work / "main.py").write_text("print('mine')")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    repo = someones_folder(tmp_path / "repo")
    (repo / ".git").mkdir()
    cases = {
        Path("/"): "a filesystem root",
        home: "your home folder",
        Path("."): "the working directory",
        work.parent: f"a folder that contains the working directory {work}",
        tmp_path: f"a folder that contains your home folder {home}",
        repo: "a source repository",
    }
    for folder, what in cases.items():
        with pytest.raises(OutputError, match=f"it is {what};"):
            refuse_replacing(folder, "finetune")
    # the checkout nlp-ssl runs from is a repository too, .git or not
    with pytest.raises(OutputError, match="it is a source repository"):
        refuse_replacing(Path(__file__).resolve().parents[1], "finetune")


def test_command_line_paths_are_taken_as_typed(tmp_path, tiny_corpus, capsys):
    raw: dict = {}
    for item in (
        "output_dir=runs/exp #2",
        "name=a: b",
        "tags={a: b}",
        "train.lr=1e-3",
        "train.epochs=2",
        "labels=[neg, pos]",
        "init=null",
        "push_to_hub=true",
        "quoted='x'",
    ):
        apply_override(raw, item)
    scalars = {k: getattr(v, "parsed", v) for k, v in raw.items()}
    scalars["train"] = {k: getattr(v, "parsed", v) for k, v in raw["train"].items()}
    assert scalars == {
        "output_dir": "runs/exp #2",
        "name": "a: b",
        "tags": {"a": "b"},
        "train": {"lr": "1e-3", "epochs": 2},
        "labels": ["neg", "pos"],
        "init": None,
        "push_to_hub": True,
        "quoted": "x",  # quotes ask for YAML's reading, as in a recipe file
    }
    # a key that takes text gets the text YAML would read as something else
    from nlp_ssl.config import load_recipe
    from nlp_ssl.tasks.seq2seq import TranslationData

    spec = {"train": {"files": "x.jsonl"}, "source_lang": "en", "target_lang": "de"}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(spec))
    data = load_recipe(TranslationData, tmp_path / "d.yaml", ["source_lang=no", "train.config=2017"])
    assert (data.source_lang, data.train.config) == ("no", "2017")
    recipe = tmp_path / "tok.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"output_dir": str(tmp_path / "exp"), "vocab_size": 300, "datasets": [{"files": str(tiny_corpus)}]}
        )
    )
    assert main(["tokenizer", str(recipe)]) == 0
    finished = hashes(tmp_path / "exp")
    assert main(["tokenizer", str(recipe), f"output_dir={tmp_path / 'exp #2'}", "--overwrite"]) == 0
    assert hashes(tmp_path / "exp") == finished  # not the folder before the " #"
    assert (tmp_path / "exp #2" / "metrics.json").is_file()
    saved = yaml.safe_load((tmp_path / "exp #2" / "resolved_config.yaml").read_text())
    assert saved["output_dir"] == str(tmp_path / "exp #2")


def test_predict_reads_one_record_per_line(tmp_path, finetuned, capsys, monkeypatch):
    """Each line of the input (blank ones skipped) is one record and one line of output, also
    for readers that split lines at U+2028, vertical tabs and form feeds as str.splitlines does."""
    import io

    lines = ["good film\u2028really", "bad\x0bfilm", "fine\x0cthing", "last line"]
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]), encoding="utf-8")
    for source in (str(texts), "-"):
        for json_lines in (True, False):
            monkeypatch.setattr("sys.stdin", io.StringIO(texts.read_text(encoding="utf-8")))
            capsys.readouterr()
            assert main(["predict", str(finetuned), "--file", source, *(["--json"] if json_lines else [])]) == 0
            out = capsys.readouterr().out.splitlines()
            assert len(out) == 4, (source, json_lines, out)
            if json_lines:
                assert [json.loads(line)["text"] for line in out] == lines
            else:
                assert [line.split("\t")[2] for line in out] == [
                    "good film\\u2028really",
                    "bad\\u000bfilm",
                    "fine\\u000cthing",
                    "last line",
                ]


def test_an_error_starts_its_own_line_after_an_unfinished_progress_bar(capsys):
    from nlp_ssl.cli import _guarded
    from nlp_ssl.errors import DataError
    from nlp_ssl.progress import progress_bar

    def fails():
        bar = progress_bar(total=10, mininterval=0)
        bar.update(3)
        raise DataError("data.csv: row 3: broken")

    assert _guarded(fails) == 2
    err = capsys.readouterr().err
    assert "\nerror: data.csv: row 3: broken\n" in "\n" + err.replace("\r", "\n")
    assert err.splitlines()[-1] == "error: data.csv: row 3: broken"


def test_a_resume_with_nothing_to_resume_says_so(tmp_path, tiny_tokenizer, tiny_corpus, caplog):
    from nlp_ssl import pretrain
    from tests.pretrain_helpers import tiny_config

    with caplog.at_level(logging.WARNING, logger="nlp_ssl"):
        pretrain.run(tiny_config(tmp_path / "run", tiny_tokenizer, tiny_corpus, max_steps=2, resume="latest"))
    assert "train.resume=latest: " in caplog.text and "holds no checkpoint yet; starting from step 0" in caplog.text


@pytest.mark.parametrize("command", ["pipeline", "study"])
def test_a_run_dir_of_someones_files_is_refused_with_or_without_overwrite(tmp_path, ctx, capsys, command):
    tiny, corpus, mlm, finetuned, sentiment = ctx
    run_dir = someones_folder(tmp_path / "mine")
    (run_dir / "results.json").write_text('{"mine": true}')  # a name the pipeline writes too
    stage = {
        "task": "sentiment",
        "data": {**sentiment_data(sentiment), "max_length": 32},
        "train": {"epochs": 1, "tracker": "none"},
    }
    raw = (
        {"run_dir": str(run_dir), "finetune": {"rt": {**stage, "init": str(mlm)}}}
        if command == "pipeline"
        else {"run_dir": str(run_dir), "finetune": stage, "arms": {"tfidf": {"method": "tfidf_logreg"}}}
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    before = hashes(run_dir)
    for extra in ([], ["--overwrite"]):
        capsys.readouterr()
        assert main([command, str(recipe), *extra]) == 2
        assert f"run_dir {run_dir} holds files no nlp-ssl {command} wrote (results.csv, sub)" in capsys.readouterr().err
        assert hashes(run_dir) == before


def test_an_output_holding_another_output_is_not_replaced(tmp_path, ctx, capsys):
    argv = commands(tmp_path, tmp_path / "tok", ctx)
    assert main(argv["tokenizer"]) == 0
    (tmp_path / "inner").mkdir()
    inner = commands(tmp_path / "inner", tmp_path / "tok" / "v2", ctx)["tokenizer"]
    assert main(inner) == 0
    capsys.readouterr()
    assert main(argv["tokenizer"] + ["--overwrite"]) == 2
    assert f"it is a tokenizer output that holds another output, {tmp_path / 'tok' / 'v2'}" in capsys.readouterr().err
    assert (tmp_path / "tok" / "v2" / "metrics.json").is_file()
