"""Command-line flags generated from a config dataclass at parse time: one flag per field, named after it,
typed from its annotation, with the help text of its ``Args:`` entry in the class docstring.

The dataclass is the one source of truth: a knob added to ``NPUDecoderConfig`` (with its docstring line) is a
flag of ``optimum-npu export`` without any edit here; a field whose annotation has no parser below makes
building the parser fail, naming the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any, Callable


def device_ids(text: str) -> int | tuple[int, ...]:
    """``"3"`` -> 3 (the first of consecutive devices); ``"0,2"`` -> (0, 2) (one device per rank)."""
    ids = int_list(text)
    if not ids:
        raise argparse.ArgumentTypeError(f"expected a device id like 0, or one id per rank like 0,1, got {text!r}")
    return ids[0] if len(ids) == 1 else tuple(ids)


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4, got {text!r}") from None


#: Annotation (as written in the dataclass) -> how its flag's value is parsed.
ARG_TYPES: dict[str, Callable[[str], Any]] = {
    "bool": bool, "int": int, "int | None": int, "str": str, "str | None": str, "tuple[int, ...] | None": int_list,
    "int | tuple[int, ...]": device_ids,
}
_ARGS_ENTRY = re.compile(r"^(\s+)(\w+): (.*)$")


def docstring_args(cls: type) -> dict[str, str]:
    """``name -> text`` of the ``Args:`` section of ``cls``'s docstring (continuation lines joined)."""
    lines = (cls.__doc__ or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Args:"), len(lines))
    entries: dict[str, str] = {}
    indent, name = None, None
    for line in lines[start + 1:]:
        match = _ARGS_ENTRY.match(line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent, name = len(match.group(1)), match.group(2)
            entries[name] = match.group(3).strip()
        elif line.strip() and name is not None and len(line) - len(line.lstrip()) > indent:
            entries[name] += " " + line.strip()
        elif line.strip():
            break  # the next section (Returns:, ...)
    return entries


def config_fields(cls: type, skip: tuple[str, ...] = (), runtime: bool = False) -> list[dataclasses.Field]:
    """The compile-time fields of ``cls`` (``runtime``: its ``metadata["runtime"]`` fields instead) except ``skip``."""
    return [f for f in dataclasses.fields(cls) if bool(f.metadata.get("runtime")) == runtime and f.name not in skip]


def add_config_flags(group: argparse._ActionsContainer, cls: type, skip: tuple[str, ...] = (),
                     runtime: bool = False) -> list[str]:
    """Adds ``--<field-name>`` for each compile-time field of ``cls`` (``runtime``: each runtime option);
    returns the field names.

    Every flag defaults to None (unset: the dataclass default or the value derived from the model applies);
    ``metadata["choices"]`` of a field become the flag's choices.
    """
    docs = docstring_args(cls)
    names = []
    for field in config_fields(cls, skip, runtime):
        parse = ARG_TYPES.get(str(field.type))
        if parse is None or field.name not in docs:
            missing = "no parser for its annotation (add one to ARG_TYPES)" if parse is None else \
                "no 'Args:' entry in the class docstring (its help text)"
            raise TypeError(f"{cls.__name__}.{field.name}: {missing}")
        help_text = docs[field.name].replace("``", "").removeprefix("runtime option: ")
        if field.default not in (None, dataclasses.MISSING) and "default" not in help_text.lower():
            help_text += f" (default {field.default})"
        options: dict[str, Any] = {"help": help_text.replace("%", "%%"), "default": None}
        if parse is bool:        # a switch: --flag turns it on, absent leaves the default
            options["action"] = "store_true"
        elif "choices" in field.metadata:
            options["choices"] = list(field.metadata["choices"])
        else:
            options["type"] = parse
        if parse is int_list:
            options["metavar"] = "N,N,..."
        group.add_argument("--" + field.name.replace("_", "-"), **options)
        names.append(field.name)
    return names


def knobs_from_args(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The flags of ``names`` that were given (None: not given)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
