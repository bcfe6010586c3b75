"""A dataclass as a command line: one `--flag` per field, the string literal under the field its `--help`, the
field's type how argparse reads it. train.py's `Config` and evaluate.py's `EvalConfig` (grpo/config.py,
evaluate.py) are read through it; nothing here knows their fields.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NoReturn, Union, cast, get_args, get_origin, get_type_hints


def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each field of a dataclass and of the dataclasses it inherits from (what cleanrl
    and tyro show as help)."""
    docs = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        class_def = tree.body[0]
        assert isinstance(class_def, ast.ClassDef)  # (the source of a class is its class statement)
        body = class_def.body
        for node, following in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)  # (a field's target always is: `name: type`)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
            ):
                docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    metavars: dict | None = None,
    nargs: dict | None = None,
    default_in_help: bool = False,
    choices: Mapping[str, Mapping[str, str]] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """One --flag per field of the dataclass `cls`: the string under the field is its help, its type says how
    to parse it (a bool gets --x / --no-x, a list one or more values, a Literal its choices). `choices`: for a
    field whose words are not a Literal (--task's come from the task registry), {field: {word: what it is}},
    listed in its help. `aliases`: {field: other flags it answers to}, such as an option's name before a
    rename."""
    metavars, nargs, choices, aliases = metavars or {}, nargs or {}, choices or {}, aliases or {}
    docs = field_docs(cls)
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if get_origin(hint) in (Union, types.UnionType):  # X | None → X
            hint = next(t for t in get_args(hint) if t is not types.NoneType)
        help_text = docs.get(f.name, "")
        kwargs = {"default": f.default, **parsing_of(hint, f.default, nargs.get(f.name, "+"))}
        if f.name in choices:
            described = [
                f"`{word}` ({what})" if what else f"`{word}`" for word, what in choices[f.name].items()
            ]
            kwargs["choices"] = tuple(choices[f.name])
            help_text += ": " + ", ".join(described)
        if default_in_help and hint is not bool and f.default is not None:
            help_text += f" (default: {f.default})"
        if f.name in metavars:
            kwargs["metavar"] = metavars[f.name]
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, *aliases.get(f.name, ()), help=help_text.replace("%", "%%"), **kwargs)
        if kwargs.get("action") is AutoOnOff:
            parser.add_argument(
                "--no-" + flag[2:], dest=f.name, action="store_const", const=False, help=argparse.SUPPRESS
            )


def parsing_of(hint: Any, default: Any, nargs: str | int) -> dict[str, Any]:
    """How argparse reads an option of type `hint`: a bool whose default is None (`auto`) as --x [auto|on|off],
    another bool as --x / --no-x, a list as `nargs` values, a Literal as one of its words, else by its type."""
    if hint is bool and default is None:
        return {"action": AutoOnOff}
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(hint) is list:
        return {"nargs": nargs}
    if get_origin(hint) is Literal:
        return {"type": str, "choices": get_args(hint)}
    return {"type": hint}


class AutoOnOff(argparse.Action):
    """`--x [auto|on|off]` for an option whose None means `auto` (decided per machine): `--x` alone is `on`; the
    value stored is None, True or False. `add_options` adds a hidden `--no-x` beside it (off)."""

    WORDS = {"auto": None, "on": True, "off": False}

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        default: bool | None = None,
        help: str | None = None,
        **kwargs: Any,
    ) -> None:
        flag = option_strings[0]
        words = f"`{flag}` alone: on, `--no-{flag[2:]}`: off; default: auto"
        super().__init__(
            option_strings, dest, nargs="?", choices=tuple(self.WORDS), default=default, metavar="auto|on|off",
            help=f"{help} ({words})" if help else f"({words})",
        )  # fmt: skip

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        # typed as any Action's values; with nargs="?" and `choices` they are one of the words, or None
        setattr(namespace, self.dest, True if values is None else self.WORDS[cast(str, values)])


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, except an `auto|on|off` one's, which says it in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if isinstance(action, AutoOnOff) else super()._get_help_string(action)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage of every flag would bury it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def one_line_warnings() -> None:
    """Print every warning as one line, `warning: …`, without the source line Python prints under it (the
    scripts' setting: a user reads what went wrong, not a line of this project's code)."""
    import warnings

    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
