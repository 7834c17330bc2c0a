"""Data layer: every file type, the local mirror, streaming, and each bad input."""

import csv
import gzip
import json

import pytest

from nlp_ssl.data import DatasetSpec, iter_text_batches, load_split, mirror_candidates, resolve
from nlp_ssl.errors import ConfigError, DataError
from tests.helpers import SHARED_DATA, make_sentences, needs_shared_data, write_jsonl

TEXTS = make_sentences(25)


def texts_of(spec, batch_size=7):
    return [t for batch in iter_text_batches(spec, batch_size=batch_size) for t in batch]


def write_file(path, kind, texts=TEXTS):
    if kind == "txt":
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif kind == "jsonl":
        write_jsonl(path, [{"text": t, "n": i} for i, t in enumerate(texts)])
    elif kind == "jsonl.gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    elif kind == "json":
        path.write_text(json.dumps([{"text": t} for t in texts]), encoding="utf-8")
    elif kind in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter="," if kind == "csv" else "\t")
            writer.writerow(["text", "label"])
            writer.writerows([t, i % 2] for i, t in enumerate(texts))
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": texts}), path)
    return path


@pytest.mark.parametrize("kind", ["txt", "jsonl", "jsonl.gz", "json", "csv", "tsv", "parquet"])
@pytest.mark.parametrize("streaming", [False, True])
def test_each_file_type(tmp_path, kind, streaming):
    path = write_file(tmp_path / f"data.{kind}", kind)
    assert texts_of(DatasetSpec(files=str(path), streaming=streaming)) == TEXTS


def test_globs_and_split_mapping(tmp_path):
    write_file(tmp_path / "a-1.jsonl", "jsonl", TEXTS[:10])
    write_file(tmp_path / "a-2.jsonl", "jsonl", TEXTS[10:])
    write_file(tmp_path / "dev.jsonl", "jsonl", ["held out text"])
    assert texts_of(DatasetSpec(files=str(tmp_path / "a-*.jsonl"))) == TEXTS
    files = {"train": str(tmp_path / "a-*.jsonl"), "validation": str(tmp_path / "dev.jsonl")}
    assert texts_of(DatasetSpec(files=files, split="validation")) == ["held out text"]
    with pytest.raises(DataError, match=r"no entry for split 'test' \(have: train, validation\)"):
        texts_of(DatasetSpec(files=files, split="test"))


def test_several_and_nested_columns(tmp_path):
    path = write_jsonl(tmp_path / "mt.jsonl", [{"translation": {"en": "a cat", "de": "eine Katze"}}])
    assert texts_of(DatasetSpec(files=str(path), text_column=["translation.en", "translation.de"])) == [
        "a cat",
        "eine Katze",
    ]


def test_clean_html_and_max_rows(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"text": "one<br /><br />two"}, {"text": "three<BR>"}, {"text": "x"}])
    assert texts_of(DatasetSpec(files=str(path), clean_html=True, max_rows=2)) == ["one\n\ntwo", "three\n"]
    assert texts_of(DatasetSpec(files=str(path), streaming=True, max_rows=1)) == ["one<br /><br />two"]


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    write_jsonl(root / "rotten_tomatoes" / "train.jsonl", [{"text": "fine", "label": 1}])
    write_jsonl(root / "rotten_tomatoes" / "test.jsonl", [{"text": "bad", "label": 0}])
    write_jsonl(root / "sst2" / "validation.jsonl", [{"text": "sst", "label": 1}])
    write_jsonl(root / "someone__corpus" / "train.jsonl", [{"text": "namespaced"}])
    monkeypatch.setenv("NLP_SSL_DATA_DIR", str(root))
    return root


@pytest.mark.parametrize(
    "name, config, split, expected",
    [
        ("rotten_tomatoes", None, "test", "bad"),
        ("cornell-movie-review-data/rotten_tomatoes", None, "train", "fine"),
        ("glue", "sst2", "validation", "sst"),
        ("nyu-mll/glue", "sst2", "validation", "sst"),
        ("someone/corpus", None, "train", "namespaced"),
    ],
)
def test_mirror_resolution(mirror, name, config, split, expected):
    spec = DatasetSpec(name=name, config=config, split=split)
    assert resolve(spec).kind == "mirror"
    assert texts_of(spec) == [expected]


def test_mirror_missing_split_lists_available(mirror):
    with pytest.raises(DataError, match=r"has no split 'validation' \(available: test, train\)"):
        load_split(DatasetSpec(name="rotten_tomatoes", split="validation"))


def test_not_mirrored_and_offline_says_where_it_looked(mirror):
    with pytest.raises(DataError) as info:
        load_split(DatasetSpec(name="roneneldan/TinyStories"))
    message = str(info.value)
    assert "'roneneldan/TinyStories'" in message and str(mirror) in message and "HF_HUB_OFFLINE" in message
    assert "files:" in message and "\n" not in message


def test_candidates_include_alias_and_basename():
    assert mirror_candidates("bentrevett/multi30k", None)[0] == "multi30k_en_de"
    assert "TinyStories" in mirror_candidates("roneneldan/TinyStories", None)


# -- bad input -------------------------------------------------------------------------


def test_missing_column(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "x"}])
    for streaming in (False, True):
        with pytest.raises(DataError, match=r"d.jsonl: no column 'text' \(columns: body\)"):
            texts_of(DatasetSpec(files=str(path), streaming=streaming))


@pytest.mark.parametrize("streaming", [False, True])
def test_empty_file(tmp_path, streaming):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty"):
        texts_of(DatasetSpec(files=str(path), streaming=streaming))


@pytest.mark.parametrize("streaming", [False, True])
def test_whitespace_only_corpus(tmp_path, streaming):
    path = write_jsonl(tmp_path / "ws.jsonl", [{"text": "  "}, {"text": "\n\t"}, {"text": ""}])
    with pytest.raises(DataError, match=r"has 3 rows but no text"):
        texts_of(DatasetSpec(files=str(path), streaming=streaming))


@pytest.mark.parametrize("value, kind", [(5, "int"), (None, "null"), (["a"], "list")])
def test_non_text_value_names_row_and_column(tmp_path, value, kind):
    rows = [{"text": "ok"}] * 3 + [{"text": value}]
    if value is not None and not isinstance(value, list):
        rows = [{"text": value}] * 4  # a column of ints is typed int by Arrow
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=rf"row \d: column 'text' is {kind}, expected text"):
        texts_of(DatasetSpec(files=str(path)))


@pytest.mark.parametrize("streaming", [False, True])
def test_undecodable_bytes_report_file_and_line(tmp_path, streaming):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "also fine"}\n{"text": "caf\xe9 latin-1"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 3: bytes are not valid UTF-8"):
        texts_of(DatasetSpec(files=str(path), streaming=streaming))


def test_undecodable_text_file(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"line one\nline \xff two\n")
    with pytest.raises(DataError, match=r"bad.txt: line 2: bytes are not valid UTF-8"):
        texts_of(DatasetSpec(files=str(path)))


@pytest.mark.parametrize("streaming", [False, True])
def test_broken_json_line(tmp_path, streaming):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"\n{"text": "c"}\n')
    with pytest.raises(DataError, match=r"broken.jsonl: line 2: not valid JSON"):
        texts_of(DatasetSpec(files=str(path), streaming=streaming))


def test_bad_paths(tmp_path):
    with pytest.raises(DataError, match=r"no file matches '.*nothing-\*.jsonl'"):
        texts_of(DatasetSpec(files=str(tmp_path / "nothing-*.jsonl")))
    with pytest.raises(DataError, match=r"missing.jsonl does not exist"):
        texts_of(DatasetSpec(files=str(tmp_path / "missing.jsonl")))
    (tmp_path / "x.docx").write_text("x")
    with pytest.raises(DataError, match=r"x.docx: unsupported file type '.docx'"):
        texts_of(DatasetSpec(files=str(tmp_path / "x.docx")))


def test_spec_needs_one_source():
    with pytest.raises(ConfigError):
        DatasetSpec()
    with pytest.raises(ConfigError):
        DatasetSpec(name="a", files="b")


@needs_shared_data("multi30k_en_de")
def test_shared_mirror_nested_translation_column():
    spec = DatasetSpec(name="bentrevett/multi30k", split="validation", text_column="translation.de", max_rows=3)
    texts = texts_of(spec)
    assert len(texts) == 3 and all(isinstance(t, str) and t for t in texts)
    assert SHARED_DATA.is_dir()
