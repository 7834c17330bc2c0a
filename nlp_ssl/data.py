"""Where datasets come from, and the checks that make bad data fail with a clear message.

A dataset is named by local files (``files:``), or by a Hub id (``name:``). A Hub id is
first looked up in the local mirror (``NLP_SSL_DATA_DIR``, laid out ``<folder>/<split>.jsonl``)
and only then loaded with ``datasets.load_dataset``; offline and not mirrored, the error
says where it looked and how to point at local files instead.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import json
import lzma
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.hub_options import hub_offline

DATA_DIR_ENV = "NLP_SSL_DATA_DIR"

# Hub ids whose mirror folder name is not derivable from the id itself.
MIRROR_ALIASES = {
    ("cornell-movie-review-data/rotten_tomatoes", None): "rotten_tomatoes",
    ("glue", "sst2"): "sst2",
    ("nyu-mll/glue", "sst2"): "sst2",
    ("stanfordnlp/sst2", None): "sst2",
    ("bentrevett/multi30k", None): "multi30k_en_de",
    ("knkarthick/dialogsum", None): "dialogsum",
}

# The Hub id each mirror folder is a copy of (see the mirror's README), for model cards.
MIRROR_SOURCES = {
    "rotten_tomatoes": "cornell-movie-review-data/rotten_tomatoes",
    "sst2": "nyu-mll/glue",
    "imdb_unsup_lm": "stanfordnlp/imdb",
    "multi30k_en_de": "bentrevett/multi30k",
    "dialogsum": "knkarthick/dialogsum",
}

_BUILDERS = {
    ".txt": "text",
    ".text": "text",
    ".jsonl": "json",
    ".json": "json",
    ".ndjson": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
}
_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclass
class DatasetSpec:
    """One dataset split and the text columns to read from it."""

    name: str | None = None
    """Hub id (``rotten_tomatoes``, ``roneneldan/TinyStories``), local-mirror folder name, or a local
    folder laid out like the mirror (``<split>.jsonl``, ``<split>.csv``, ...)."""
    config: str | None = None
    """Hub configuration (subset) name, e.g. ``sst2`` for ``glue``."""
    files: str | list[str] | dict[str, str | list[str]] | None = None
    """Local files instead of ``name``: a path or glob, a list of them, or ``{split: paths}``."""
    split: str = "train"
    text_column: str | list[str] = "text"
    """Column(s) holding text; dotted paths reach into nested rows (``translation.de``)."""
    streaming: bool = False
    """Iterate without loading the split into memory or the Arrow cache (corpora bigger than RAM)."""
    max_rows: int | None = None
    """Use at most this many rows (the first ones) of the split."""
    clean_html: bool = False
    """Turn HTML line breaks (``<br />``, as in IMDB reviews) into newlines."""

    def __post_init__(self):
        if (self.name is None) == (self.files is None):
            raise ConfigError(
                "a dataset needs exactly one of 'name' (Hub id or mirror folder) or 'files' (local paths)"
            )
        if self.max_rows is not None and self.max_rows <= 0:
            raise ConfigError(f"'max_rows' must be positive, got {self.max_rows}")
        if isinstance(self.text_column, list) and not self.text_column:
            raise ConfigError("'text_column' must name at least one column")

    @property
    def text_columns(self) -> list[str]:
        return [self.text_column] if isinstance(self.text_column, str) else list(self.text_column)

    def describe(self) -> str:
        if self.name is not None:
            cfg = f" ({self.config})" if self.config else ""
            return f"{self.name}{cfg} [{self.split}]"
        return f"{self.files} [{self.split}]"


@dataclass
class Source:
    """Where a spec resolved to: the ``datasets`` builder and files, or a Hub id."""

    kind: str  # "files" | "mirror" | "hub"
    builder: str | None
    files: list[str]
    label: str


def hub_id(spec: DatasetSpec) -> str | None:
    """The public Hub dataset a spec stands for (None for local files and folders)."""
    if spec.name is None or Path(spec.name).expanduser().exists():
        return None
    for (name, config), folder in MIRROR_ALIASES.items():
        if spec.name == folder or (spec.name == name and config in (None, spec.config)):
            return MIRROR_SOURCES.get(folder, name)
    return MIRROR_SOURCES.get(spec.name, spec.name)


def mirror_roots() -> list[Path]:
    value = os.environ.get(DATA_DIR_ENV, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def mirror_candidates(name: str, config: str | None) -> list[str]:
    """Folder names a Hub id may have in the mirror, most specific first."""
    base = name.rstrip("/").split("/")[-1]
    names = []
    alias = MIRROR_ALIASES.get((name, config)) or MIRROR_ALIASES.get((name, None))
    if alias:
        names.append(alias)
    if config:
        names += [f"{base}_{config}", config]
    names += [name.replace("/", "__"), base, name]
    return list(dict.fromkeys(names))


def resolve(spec: DatasetSpec) -> Source:
    if spec.files is not None:
        files = expand_files(spec)
        return Source("files", _builder_for(files), files, ", ".join(files))
    local = Path(spec.name).expanduser()
    if local.is_dir():  # a folder laid out like the mirror: <split>.jsonl, <split>.csv, ...
        return _from_folder(local, spec, "folder")
    if local.is_file():
        raise DataError(
            f"dataset name {spec.name!r} is a file; name files with 'files: {spec.name}' "
            "('name' takes a folder of split files or a Hub id)"
        )
    for root in mirror_roots():
        for folder in mirror_candidates(spec.name, spec.config):
            directory = root / folder
            if directory.is_dir():
                return _from_folder(directory, spec, "mirror folder")
    if looks_local(spec.name):  # a Hub id is "name" or "owner/name"
        raise DataError(f"dataset {spec.name!r}: local folder {local.absolute()} does not exist")
    return Source("hub", None, [], spec.name)


def looks_local(name: str) -> bool:
    """Whether ``name`` can only be a local path, never a Hub id (``./x``, ``/x``, ``~/x``,
    ``a/b/c``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _from_folder(directory: Path, spec: DatasetSpec, what: str) -> Source:
    found = _split_files(directory, spec.split)
    if not found:
        available = sorted({_split_of(p) for p in directory.iterdir() if _split_of(p)})
        raise DataError(
            f"dataset {spec.name!r}: {what} {directory} has no split {spec.split!r} "
            f"(available: {', '.join(available) or 'none'})"
        )
    where = found[0] if len(found) == 1 else str(directory)  # name the file when there is one
    label = where if what == "folder" else f"{spec.name} from {where}"
    return Source("mirror", _builder_for(found), found, label)


def load_split(spec: DatasetSpec, source: Source | None = None):
    """Load one split as a ``datasets.Dataset`` (or ``IterableDataset`` when streaming)."""
    import datasets

    source = source or resolve(spec)
    empty = [f for f in source.files if os.path.getsize(f) == 0]
    if source.files and len(empty) == len(source.files):
        raise DataError(f"dataset {source.label}: split {spec.split!r} is empty ({', '.join(empty)} has no rows)")
    try:
        if source.kind == "hub":
            ds = _load_from_hub(spec)
        else:
            kwargs = {"sep": "\t"} if source.builder == "csv" and _all_tsv(source.files) else {}
            ds = datasets.load_dataset(
                source.builder,
                data_files={spec.split: source.files},
                split=spec.split,
                streaming=spec.streaming,
                **kwargs,
            )
    except DataError:
        raise
    except Exception as exc:
        raise _explain_load_failure(exc, source, spec) from None
    if spec.max_rows is not None:
        ds = ds.take(spec.max_rows) if spec.streaming else ds.select(range(min(spec.max_rows, len(ds))))
    if not spec.streaming and len(ds) == 0:
        raise DataError(f"dataset {source.label}: split {spec.split!r} is empty")
    return ds


def iter_text_batches(spec: DatasetSpec, batch_size: int = 1000) -> Iterator[list[str]]:
    """Yield lists of texts from every text column of ``spec``, validated row by row.

    Raises DataError naming the row and column for missing columns and non-text values,
    and for a split that holds no text at all (empty or whitespace only).
    """
    source = resolve(spec)
    ds = load_split(spec, source)
    label = source.label
    columns = spec.text_columns
    _check_columns(ds.column_names, columns, label)
    tops = list(dict.fromkeys(c.split(".")[0] for c in columns))
    if ds.column_names is not None:
        ds = ds.select_columns(tops)
    row = 0
    saw_text = False
    batches = ds.iter(batch_size=batch_size)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except Exception as exc:  # streaming reads happen here, not at load time
            raise _explain_load_failure(exc, source, spec) from None
        n = len(next(iter(batch.values())))  # column_texts reports a missing column
        for column in columns:
            texts = column_texts(batch, column, spec, label, rows=range(row, row + n))
            saw_text = saw_text or any(t.strip() for t in texts)
            yield texts
        row += n
    if row == 0:
        raise DataError(f"dataset {label}: split {spec.split!r} is empty")
    if not saw_text:
        raise DataError(f"dataset {label}: split {spec.split!r} has {row} rows but no text (all empty or whitespace)")


def column_texts(batch: dict, column: str, spec: DatasetSpec, label: str, rows=None) -> list[str]:
    """The texts of one (possibly dotted, nested) column of a batch, checked and cleaned.

    Every reader of text (tokenizer training, tokenization for packing, streams) goes
    through here, so they reject the same values with the same message. ``rows`` numbers
    the batch's rows for that message (a stream has no row numbers).
    """
    top, *rest = column.split(".")
    if top not in batch:
        raise missing_column(f"dataset {label}", top, batch)
    values = batch[top]
    for part in rest:
        values = [v.get(part) if isinstance(v, dict) else None for v in values]
    texts = []
    for i, value in enumerate(values):
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            where = f"row {rows[i]}: " if rows is not None else ""
            raise DataError(f"dataset {label}: {where}column {column!r} is {kind}, expected text")
        texts.append(_HTML_BREAK.sub("\n", value) if spec.clean_html else value)
    return texts


def dig(row: dict, column: str):
    """The value of a (possibly dotted, nested) column in one row; None when absent."""
    value = row
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def missing_column(where: str, column: str, available, what: str = "column") -> DataError:
    """``<where>: no column 'x' (columns: ...)``, with the likely cause when the file's header was
    read as one column because its separator is not the one its extension promises."""
    available = list(available)
    hint = ""
    if len(available) == 1:
        sep = next((d for d in (";", "\t", "|", ",") if d in str(available[0])), None)
        if sep is not None:
            shown = {"\t": "tab", ";": "';'", "|": "'|'", ",": "','"}[sep]
            hint = (
                f"; the header looks {shown}-separated, but .csv is read comma-separated and .tsv "
                "tab-separated: "
                + (
                    "name the file .tsv"
                    if sep == "\t"
                    else "name a comma-separated file .csv"
                    if sep == ","
                    else "write it with commas (pandas: df.to_csv(path, index=False))"
                )
            )
    return DataError(f"{where}: no {what} {column!r} (columns: {', '.join(map(str, available))}){hint}")


def _check_columns(available, columns: list[str], label: str) -> None:
    if available is None:
        return
    for column in columns:
        top = column.split(".")[0]
        if top not in available:
            raise missing_column(f"dataset {label}", top, available)


def _load_from_hub(spec: DatasetSpec):
    import datasets

    try:
        return datasets.load_dataset(spec.name, spec.config, split=spec.split, streaming=spec.streaming)
    except Exception as exc:
        roots = mirror_roots()
        looked = (
            "looked in " + ", ".join(str(r / c) for r in roots for c in mirror_candidates(spec.name, spec.config)[:2])
            if roots
            else f"{DATA_DIR_ENV} is not set"
        )
        offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"dataset {spec.name!r}: not in the local mirror ({looked}) and not loadable from the Hub{offline}: "
            f"{reason}. Use 'files: path/to/*.jsonl' for local files or set {DATA_DIR_ENV} to a folder holding it"
        ) from None


def expand_files(spec: DatasetSpec) -> list[str]:
    """The absolute paths of a ``files`` spec's split (globs expanded); a ``DataError`` names
    the first pattern that matches no file."""
    patterns = spec.files
    if isinstance(patterns, dict):
        if spec.split not in patterns:
            raise DataError(f"files: no entry for split {spec.split!r} (have: {', '.join(patterns)})")
        patterns = patterns[spec.split]
    if isinstance(patterns, str):
        patterns = [patterns]
    files: list[str] = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        matches = sorted(glob.glob(expanded, recursive=True)) if glob.has_magic(expanded) else [expanded]
        if not matches:
            raise DataError(f"files: no file matches {pattern!r}")
        for match in matches:
            if not os.path.isfile(match):
                raise DataError(f"files: {match} does not exist or is not a file")
            files.append(os.path.abspath(match))
    return files


def _builder_for(files: list[str]) -> str:
    builders = set()
    for f in files:
        ext = _data_ext(f)
        if ext not in _BUILDERS:
            raise DataError(
                f"{f}: unsupported file type {ext or '(none)'!r}; expected one of {', '.join(sorted(_BUILDERS))}"
            )
        builders.add(_BUILDERS[ext])
    if len(builders) > 1:
        raise DataError(f"files of different formats in one split: {', '.join(files)}")
    return builders.pop()


def _data_ext(path: str) -> str:
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _all_tsv(files: list[str]) -> bool:
    return all(_data_ext(f) == ".tsv" for f in files)


def _split_files(directory: Path, split: str) -> list[str]:
    return sorted(str(p) for p in directory.iterdir() if p.is_file() and _split_of(p) == split)


def _split_of(path: Path) -> str | None:
    name = path.name
    for comp in _COMPRESSED:
        if name.endswith(comp):
            name = name[: -len(comp)]
    stem, ext = os.path.splitext(name)
    if ext.lower() not in _BUILDERS:
        return None
    # train.jsonl, train-00000-of-00002.parquet
    return re.split(r"[-.]\d{5}-of-\d{5}$", stem)[0]


def _open_bytes(path: str):
    opener = _COMPRESSED.get(Path(path).suffix.lower(), open)
    return opener(path, "rb")


def diagnose_file(path: str, builder: str) -> str | None:
    """Find the first line of a local file that ``datasets`` would choke on.

    Runs only after a load failed, so the happy path pays nothing for precise messages.
    """
    if builder == "parquet":
        return _diagnose_parquet(path)
    rows = 0
    try:
        with _open_bytes(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return f"{path}: line {lineno}: bytes are not valid UTF-8 (at byte {exc.start} of the line)"
                rows += bool(line.strip())
                if builder == "json" and _data_ext(path) != ".json" and line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        return f"{path}: line {lineno}: not valid JSON ({exc.msg})"
                    if not isinstance(row, dict) and row is not None:
                        return (
                            f"{path}: line {lineno}: a JSON {_json_kind(row)}, expected an object per line "
                            '(like {"text": ...})'
                        )
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    except EOFError:
        return f"{path}: compressed file is truncated"
    except (zlib.error, lzma.LZMAError) as exc:
        return f"{path}: compressed data is corrupt ({exc}); re-create or re-download the file"
    if builder == "csv" and rows == 1:
        return f"{path}: only a header line, no rows"
    return None


def _json_kind(value) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "value")


def _diagnose_parquet(path: str) -> str | None:
    try:
        import pyarrow.parquet as pq

        pq.ParquetFile(path)
    except ImportError:
        return None
    except OSError as exc:
        if not os.access(path, os.R_OK):
            return f"{path}: cannot be read ({exc})"
        return f"{path}: not a readable Parquet file (truncated, or not Parquet: {str(exc).splitlines()[0][:120]})"
    except Exception as exc:  # pyarrow raises ArrowInvalid for a damaged footer
        return f"{path}: not a readable Parquet file (truncated, or not Parquet: {str(exc).splitlines()[0][:120]})"
    return None


def diagnose_source(source: Source) -> str | None:
    """The first problem ``diagnose_file`` finds in any of ``source``'s files."""
    return next(filter(None, (diagnose_file(path, source.builder or "") for path in source.files)), None)


def _explain_load_failure(exc: Exception, source: Source, spec: DatasetSpec) -> DataError:
    problem = diagnose_source(source)
    if problem:
        return DataError(problem)
    message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    if source.kind == "hub":
        return DataError(f"dataset {spec.name!r}: {message}")
    return DataError(f"dataset {source.label}: cannot be loaded ({type(exc).__name__}: {message})")


def hold_out(n: int, fraction: float, seed: int, too_few: str, salt: int = 0xE7A1) -> tuple:
    """Seeded ``(train, validation)`` positions for a recipe without a validation set: a
    ``fraction`` of the ``n`` rows (at least one) is held out, the rest trains; ``too_few`` is
    the error when nothing would be left to train on. ``salt`` gives each stage its own draw
    (fine-tuning and pretraining use different ones), so a seed reproduces a stage's split."""
    import numpy as np

    order = np.random.default_rng([seed, salt]).permutation(n)
    held = max(1, int(round(n * fraction)))
    if n - held < 1:
        raise ConfigError(too_few)
    return np.sort(order[held:]), np.sort(order[:held])
