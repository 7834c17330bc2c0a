"""Typed recipes: YAML -> dataclasses, with dotted CLI overrides and strict validation.

A recipe maps one-to-one onto a dataclass tree. Every field is typed; loading checks
each value against its annotation and rejects unknown keys with the closest valid name,
so a typo in a recipe fails before any work starts instead of silently using a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from nlp_ssl import run_format
from nlp_ssl.errors import ConfigError

_MISSING = dataclasses.MISSING


def load_recipe(cls, path: str | Path | None, overrides: list[str] | None = None):
    """Read a YAML recipe (or start from defaults if ``path`` is None), apply
    ``key.sub=value`` overrides, and build a validated ``cls`` instance. ``cls`` may also be a
    function ``(raw, source) -> class`` that picks the class from the recipe's keys."""
    raw: dict[str, Any] = {}
    source = "<overrides>"
    if path is not None:
        source = str(path)
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: recipe file not found")
        try:
            loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
        except DuplicateKeyError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, got {type(loaded).__name__}")
        raw = loaded
    for item in overrides or []:
        apply_override(raw, item)
    if not isinstance(cls, type):  # a selector: the recipe's own keys pick its class (finetune's ``task``)
        cls = cls(raw, source)
    return from_dict(cls, raw, source=source)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (YAML would keep the last one without a word)."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key given twice in one mapping is an error naming the
    key and both lines (a second ``train:`` section would otherwise silently drop the first).
    Keys brought in by a merge (``<<: *anchor``) may be overridden: that is what merges are for."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                    seen.setdefault(key, line)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    where = f"line {line}" if first == line else f"lines {first} and {line}"
                    raise DuplicateKeyError(f"key {key!r} appears twice in one mapping ({where}); keep one")
        return super().construct_mapping(node, deep=deep)


class CommandLineText(str):
    """An override's value exactly as typed, where YAML read it as text: a path or name from the
    command line is taken literally (``output_dir=runs/exp #2`` is that folder, not ``runs/exp``
    with a comment). Behaves as the string; ``to_dict`` writes it as a plain one."""


class CommandLineScalar:
    """An override YAML reads as a number, boolean or null, with the text as typed: a key that
    takes text gets the text (``data.source_lang=no`` is Norwegian, not false; ``data.config=2017``
    a name; ``output_dir=~`` the home folder), any other key the value."""

    __slots__ = ("text", "parsed")

    def __init__(self, text: str, parsed: Any):
        self.text, self.parsed = text, parsed

    def __eq__(self, other) -> bool:
        return isinstance(other, CommandLineScalar) and (self.text, self.parsed) == (other.text, other.parsed)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self.parsed)


def apply_override(raw: dict, item: str) -> None:
    """Set ``a.b.c=value`` in a nested dict. The value is read as YAML for numbers, booleans,
    null and ``[...]`` / ``{...}``; anything else is text, kept exactly as typed
    (``CommandLineText``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    quoted = len(text.strip()) > 1 and text.strip()[0] == text.strip()[-1] and text.strip()[0] in "'\""
    if quoted and isinstance(value, str):
        pass  # '"no"' asks for the text no, as in a recipe file
    elif isinstance(value, str) or (isinstance(value, (dict, list)) and not text.lstrip().startswith(("{", "["))):
        value = CommandLineText(text)  # lists and mappings only in flow style: "a: b" is text
    elif not isinstance(value, (dict, list)):
        value = CommandLineScalar(text, value)
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        target = _list_index(node, part)
        if target is not None:
            node = target
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[: depth + 1])!r} is a value, not a section")
        node = child
    last = parts[-1]
    if isinstance(node, list):
        index = _parse_index(last, item, len(node))
        node[index] = value
    else:
        node[last] = value


def _list_index(node, part):
    if isinstance(node, list):
        index = _parse_index(part, part, len(node))
        if not isinstance(node[index], (dict, list)):
            node[index] = {}
        return node[index]
    return None


def _parse_index(part: str, item: str, length: int) -> int:
    try:
        index = int(part)
    except ValueError:
        raise ConfigError(f"override {item!r}: {part!r} must be a list index") from None
    if not -length <= index < length:
        raise ConfigError(f"override {item!r}: index {index} out of range (list has {length} items)")
    return index


def upgrade(cls: type, data: dict, saved_format: int = 0) -> dict:
    """A recipe saved by a run of ``saved_format`` (``nlp_ssl.run_format``) in today's form,
    section by section; keys the section no longer has are dropped."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    data = run_format.recipe_step(cls, data, saved_format)
    return {key: _upgrade_value(hints[key], value, saved_format) for key, value in data.items() if key in names}


def recipe_changes(saved: dict, config, ignore: tuple[str, ...] = (), saved_format: int = 0) -> list[str]:
    """How ``config`` differs from the recipe ``saved`` in a run folder of ``saved_format``
    (upgraded to today's form), as ``key: old -> new`` lines with dotted keys; keys in
    ``ignore`` (dotted) do not count."""
    old, new = upgrade(type(config), saved or {}, saved_format), to_dict(config)
    changes: list[str] = []

    def walk(a, b, where: str) -> None:
        if where in ignore:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(a) + [k for k in b if k not in a]:
                walk(a.get(key, _ABSENT), b.get(key, _ABSENT), _join(where, str(key)))
        elif a != b:
            changes.append(f"{where}: {_shown(a)} -> {_shown(b)}")

    walk(old, new, "")
    return changes


_ABSENT = object()


def _shown(value) -> str:
    return (
        "(absent)"
        if value is _ABSENT
        else yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    )


def _upgrade_value(hint, value, saved_format: int):
    """``value`` upgraded as the section(s) ``hint`` declares: ``X``, ``X | None``, ``list[X]``."""
    if get_origin(hint) in (Union, types.UnionType):
        classes = [a for a in get_args(hint) if a is not type(None)]
        lists = [a for a in classes if get_origin(a) is list]
        hint = lists[0] if isinstance(value, list) and len(lists) == 1 else classes[0] if len(classes) == 1 else None
    if get_origin(hint) is list and isinstance(value, list):
        return [_upgrade_value(get_args(hint)[0], item, saved_format) for item in value]
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return upgrade(hint, value, saved_format)
    return value


def from_dict(cls: type, data: Any, source: str = "<recipe>", prefix: str = ""):
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    where = prefix or "recipe"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        renamed = run_format.renamed_keys(cls).get(key)
        suggestion = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
        hint = f"; did you mean {_join(prefix, suggestion[0])!r}?" if suggestion else ""
        if renamed:
            hint = f"; it was renamed {_join(prefix, renamed)!r}"
        elsewhere = getattr(cls, "SECTIONS_ELSEWHERE", {}).get(key)
        if elsewhere:
            hint = f"; it {elsewhere}: remove it"
        valid = ", ".join(sorted(fields))
        raise ConfigError(f"{source}: unknown key {_join(prefix, key)!r}{hint} (valid keys: {valid})")
    given = getattr(cls, "check_given", None)
    if given is not None:  # rules about which keys a recipe wrote, which defaults cannot show
        try:
            given({key: to_dict(value) for key, value in data.items()})  # as written: command-line values read
        except ConfigError as exc:
            raise ConfigError(f"{source}: {prefix + ': ' if prefix else ''}{exc}") from None
    kwargs = {}
    for name, field in fields.items():
        full = _join(prefix, name)
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], source, full)
        elif field.default is _MISSING and field.default_factory is _MISSING:
            raise ConfigError(f"{source}: missing required key {full!r}")
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:  # raised by a config's __post_init__ value checks
        raise ConfigError(f"{source}: {prefix + ': ' if prefix else ''}{exc}") from None
    return obj


def _coerce(tp: Any, value: Any, source: str, key: str):
    origin = get_origin(tp)
    if tp is Any:  # a section read later by another recipe class (a pipeline's stages): kept as typed
        return value
    if isinstance(value, CommandLineScalar):
        value = value.text if _takes_text(tp, value) else value.parsed
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, source, key)
            except EmptyPathError:
                raise
            except ConfigError as exc:
                errors.append((option, exc))
        sections = [exc for option, exc in errors if dataclasses.is_dataclass(option)]
        if isinstance(value, dict) and len(sections) == 1:
            raise sections[0]  # a section that is there but wrong: its own error, not "must be a mapping"
        expected = " or ".join(_type_name(o) for o in options)
        raise ConfigError(f"{source}: {key!r} must be {expected}, got {_describe(value)}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return choices[choices.index(value)]
        suggestion = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"; did you mean {suggestion[0]!r}?" if suggestion else ""
        raise ConfigError(f"{source}: {key!r} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}")
    if origin is list:
        (item_tp,) = get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key!r} must be a list, got {_describe(value)}")
        return [_coerce(item_tp, v, source, f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key!r} must be a mapping, got {_describe(value)}")
        return {_coerce(key_tp, k, source, key): _coerce(val_tp, v, source, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key!r} must be true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _yaml_number(value)
        if number is not None and float(number).is_integer():
            return int(number)  # allow 1e6 for step/token counts
        raise ConfigError(f"{source}: {key!r} must be an integer, got {_describe(value)}")
    if tp is float:
        number = _yaml_number(value)
        if number is not None and math.isfinite(number):
            return float(number)
        if number is not None:  # .inf / .nan: no setting of ours means anything with them
            raise ConfigError(f"{source}: {key!r} must be a finite number, got {number}")
        raise ConfigError(f"{source}: {key!r} must be a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            _refuse_empty_path(value, source, key)
            return str(value)
        raise ConfigError(f"{source}: {key!r} must be a string, got {_describe(value)}")
    raise TypeError(f"unsupported config type {tp!r} for {key}")


PATH_KEYS = (
    "output_dir",
    "run_dir",
    "resume",
    "tokenizer",
    "init",
    "init_decoder",
    "init_embeddings",
    "checkpoint",
    "cache_dir",
    "files",
    "name",
)
"""Recipe keys whose text names a file or folder: empty, they would mean the working directory."""


def _refuse_empty_path(value: str, source: str, key: str) -> None:
    parts = key.split(".")
    named = parts[-1] in PATH_KEYS or "files" in parts[-3:-1]  # data.train.files.0, files.train.1
    if named and not value.strip():
        raise EmptyPathError(
            f"{source}: {key!r} is empty, but it names a folder or file (an empty path would "
            "be the working directory); give the path"
        )


class EmptyPathError(ConfigError):
    """A path key is empty: said as it is, not as one more type a union did not match."""


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _yaml_number(value: Any) -> int | float | None:
    """A number, including YAML 1.1's blind spot: ``1e-4`` and ``1e6`` (no dot) load as strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        return float(value)
    return None


def to_dict(obj) -> Any:
    """Plain-data view of a config (what gets written next to every output)."""
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, CommandLineScalar):
        return obj.parsed
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dump_yaml(obj) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: Any, where: str) -> None:
    """A stage or arm name becomes a folder under ``run_dir``: a plain name, never a path
    (``x/../../escaped`` would write outside the run folder)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"{where}: {name!r} is not a valid name; use letters, digits, '.', '_' and '-' "
            "(it names a folder under run_dir, so no '/', '..' or spaces)"
        )


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _takes_text(tp: Any, value: CommandLineScalar) -> bool:
    """Whether a key of type ``tp`` takes the override's text rather than YAML's reading of it."""
    if tp is str:
        return True
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return value.text in args and value.parsed not in args
    if origin in (Union, types.UnionType):
        if value.parsed is None and type(None) in args:
            return False
        return any(_takes_text(a, value) for a in args if a is not type(None) and a is not type(value.parsed))
    return False


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(str(value) if isinstance(value, str) else value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{'str' if isinstance(value, str) else type(value).__name__} {text}"


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if get_origin(tp) is list:
        return "a list"
    if get_origin(tp) is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, str(tp))
