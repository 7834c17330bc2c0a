"""What ``nlp-ssl STAGE --keys`` prints: every recipe key of a config class with its type,
default and the first sentence of the docstring under its field."""

from __future__ import annotations

import dataclasses
import re
import typing

import yaml

from nlp_ssl.config import _join, to_dict


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and its bases), by field name."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(getattr(after, "value", None), ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe_keys(cls: type, prefix: str = "") -> list[str]:
    """One line per recipe key of ``cls``, nested sections dotted: name, type, default and the
    first sentence of its docstring (what ``nlp-ssl STAGE --keys`` prints)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, key = hints[f.name], _join(prefix, f.name)
        nested = _dataclass_in(tp)
        if nested is not None and not _is_list(tp):
            lines.append(f"{key}:  (section)" + (f"  {_first_sentence(docs[f.name])}" if f.name in docs else ""))
            lines += describe_keys(nested, key)
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        shown = default if default == "required" else yaml.safe_dump(to_dict(default), default_flow_style=True).strip()
        shown = shown.removesuffix("\n...").removesuffix("...").strip()
        help_text = f"  {_first_sentence(docs[f.name])}" if f.name in docs else ""
        lines.append(f"{key} = {shown}{help_text}")
    return lines


def _dataclass_in(tp):
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _is_list(tp) -> bool:
    return typing.get_origin(tp) in (list, tuple) or any(
        typing.get_origin(a) in (list, tuple) for a in typing.get_args(tp)
    )


def _first_sentence(text: str) -> str:
    end = re.search(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z`(])", text)
    return text if end is None else text[: end.start() + 1]
