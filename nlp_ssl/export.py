"""``nlp-ssl export RUN OUT_DIR``: a folder any ``transformers`` user can load (weights as
safetensors, config, tokenizer, generation config) with its model card (``README.md``).
Nothing else leaves the run: no optimizer state, no pickles, no machine paths, no tokens."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
from pathlib import Path

from nlp_ssl.errors import DataError, OutputError
from nlp_ssl.head_model import head_folder
from nlp_ssl.model_card import build_card, find_run

# What a loadable model folder needs, and nothing more.
EXPORTED = (
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",
    "chat_template.jinja",
)
# Keys that record where files were on the machine that wrote them, or how it loaded them.
PATH_KEYS = ("_name_or_path", "name_or_path", "is_local", "local_files_only")


def export(
    checkpoint: str,
    out_dir: str,
    *,
    overwrite: bool = False,
    license: str = "other",
    language: str | list[str] | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write the Hub-ready folder for ``checkpoint`` at ``out_dir`` (atomically)."""
    from nlp_ssl.outputs import output_path, staged_output

    out = output_path(out_dir, "the export folder")  # before reading anything
    record = find_run(checkpoint)
    head = record.stage == "baseline" or head_folder(record.model_dir) is not None
    files = head_files(record.model_dir) if head else export_files(record.model_dir)
    if not head and not any(f.endswith(".safetensors") for f in files):
        raise DataError(
            f"checkpoint {record.model_dir}: no *.safetensors weights (pickled weights are not exported; "
            "load the model and save_pretrained(..., safe_serialization=True) first)"
        )
    card = build_card(record, license=license, language=language, base_model=base_model, repo_id=repo_id)
    if record.run_dir is not None and out.is_relative_to(record.run_dir):
        raise OutputError(f"export folder {out} lies inside the run {record.run_dir}; choose a folder outside it")
    inputs = {"checkpoint": record.model_dir.resolve()}
    if record.run_dir is not None:
        inputs["run"] = record.run_dir.resolve()
    with staged_output(out, overwrite, inputs, kind="export") as staging:
        for name in files:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(record.model_dir / name, staging / name)
            if name.endswith(".json"):
                _drop_path_keys(staging / name)
        card.save(str(staging / "README.md"))
        leaks = scan_for_leaks(staging)
        if leaks:
            raise OutputError(f"export would publish {leaks[0]}; nothing was written")
    return out


def export_files(model_dir: Path) -> list[str]:
    """The files of ``model_dir`` an export copies (and so would upload)."""
    return sorted(
        p.name
        for p in model_dir.iterdir()
        if p.is_file() and any(fnmatch.fnmatch(p.name, pattern) for pattern in EXPORTED)
    )


def head_files(model_dir: Path) -> list[str]:
    """The files of a baseline run's head folder an export copies: all of it but the card
    sentence-transformers wrote for the encoder (it names this machine's folders)."""
    return sorted(
        p.relative_to(model_dir).as_posix()
        for p in model_dir.rglob("*")
        if p.is_file() and not (p.name == "README.md" and p.parent != model_dir)
    )


def scan_for_leaks(folder: Path) -> list[str]:
    """Text files that hold a Hub token or an absolute path of this machine."""
    secrets = [v for v in (os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")) if v]
    home = str(Path.home())
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix in (".safetensors", ".model"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(s in text for s in secrets) or re.search(r"\bhf_[A-Za-z0-9]{30,}\b", text):
            found.append(f"a Hub token in {path.name}")
            continue
        local = re.search(r"(?<![\w.])/(?:tmp|work|home|root|Users)/[^\s'\"`,)]*", text)
        if home != "/" and home in text:
            local = re.search(re.escape(home) + r"[^\s'\"`,)]*", text)
        if local:
            found.append(f"a local path in {path.name} ({local.group(0)})")
    return found


def _drop_path_keys(path: Path) -> None:
    """Remove ``PATH_KEYS`` at any depth (an encoder-decoder's sub-configs carry their own)."""

    def strip(value) -> bool:
        if isinstance(value, dict):
            hit = any([value.pop(k, None) is not None for k in PATH_KEYS])
            return any([strip(v) for v in value.values()]) or hit
        return isinstance(value, list) and any([strip(v) for v in value])

    data = json.loads(path.read_text(encoding="utf-8"))
    if strip(data):
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", help="a run folder (pretrain, finetune or baseline), its model/ folder, or a checkpoint"
    )
    p.add_argument("out_dir", help="the folder to write (model files + README.md model card)")
    p.add_argument("--license", default="other", help="license identifier for the card (default: other)")
    p.add_argument(
        "--language", default=None, help="language code(s) for the card (default: the translation pair, else en)"
    )
    p.add_argument("--base-model", default=None, help="Hub id of the model this one was trained from")
    p.add_argument("--repo-id", default=None, help="the Hub repo it is meant for (names the card and its snippets)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing out_dir")


def run_export(args: argparse.Namespace) -> dict:
    out = export(
        args.checkpoint,
        args.out_dir,
        overwrite=args.overwrite,
        license=args.license,
        language=args.language,
        base_model=args.base_model,
        repo_id=args.repo_id,
    )
    return {"exported": str(out), "files": sorted(p.name for p in out.iterdir())}
