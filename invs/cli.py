"""Shared command-line plumbing for the stage entry points: common flags, config resolution, clean errors.

Every entry point accepts ``--config FILE_OR_PRESET``, ``--set section.key=value`` (repeatable) and
``--address ADDR`` (a Ray cluster; default: start a local Ray instance). Stage flags override the config file
and ``--set`` overrides both. A :class:`~invs.errors.InvsError` is printed as one ``error:`` line with exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, get_args, get_origin

from invs import storage
from invs.config import Config, apply_storage_settings, load_config, parse_override, setting
from invs.errors import InvsError, StorageError

EXIT_USAGE = 2


def stage_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--config", default="local", help="preset name (local, paper, ...) or YAML file (default: local)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any setting, e.g. --set render.views=24 (repeatable)",
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster address ('auto' inside a cluster); default: a local Ray instance"
    )
    return parser


def add_settings(
    parser: argparse.ArgumentParser | argparse._ActionsContainer, section: str, helps: dict[str, str | tuple[str, str]]
) -> dict[str, str]:
    """Add one flag per config field of ``section``; returns the ``dest -> section.field`` map for resolve_config.

    ``helps`` maps a field name to its help text, or to ``(flag name, help)`` where the flag is not the field's
    name (``timeout_s`` -> ``--timeout``). Type, choices and repetition come from the field's annotation (a
    Literal gives choices, a bool a ``--x/--no-x`` pair, a list a repeatable flag); the default is the config's,
    so a flag that is not given changes nothing.
    """
    fields = {f.name: f for f in dataclasses.fields(type(getattr(Config(), section)))}
    hints = typing.get_type_hints(type(getattr(Config(), section)))
    keys: dict[str, str] = {}
    for name, entry in helps.items():
        if name not in fields:
            raise KeyError(f"{section}.{name} is not a setting")
        flag, text = entry if isinstance(entry, tuple) else (name, entry)
        dest = f"{section}__{name}"
        kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": f"{text} [{section}.{name}]".lstrip()}
        tp = hints[name]
        if get_origin(tp) in (typing.Union, types.UnionType):
            (tp,) = (a for a in get_args(tp) if a is not type(None))
        if get_origin(tp) is Literal:
            kwargs |= {"choices": list(get_args(tp)), "type": type(get_args(tp)[0])}
        elif tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(tp) is list and get_origin(get_args(tp)[0]) is Literal:
            kwargs |= {"action": "append", "choices": list(get_args(get_args(tp)[0])), "type": str}
        elif get_origin(tp) is list:
            kwargs |= {"action": "append", "type": get_args(tp)[0], "metavar": flag.upper()}
        elif tp in (int, float, str):
            kwargs |= {"type": tp, "metavar": flag.upper()}
        else:
            raise TypeError(f"{section}.{name}: no flag for settings of type {tp!r}; use --set")
        parser.add_argument(f"--{flag.replace('_', '-')}", **kwargs)
        keys[dest] = f"{section}.{name}"
    return keys


def resolve_config(args: argparse.Namespace, flag_keys: dict[str, str], locations: tuple[str, ...] = ()) -> Config:
    """Config from ``--config``, then stage flags (``flag_keys`` maps argparse dest -> dotted key), then ``--set``.

    ``locations`` names the dotted keys holding URIs the stage reads or writes; each is checked up front so a
    malformed URI fails before any work starts.
    """
    overrides: dict[str, Any] = {}
    for dest, key in flag_keys.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "address", None) is not None:
        overrides["ray.address"] = args.address
    for path, value in map(parse_override, args.overrides):
        overrides[".".join(path)] = value
    config = load_config(args.config, overrides or None)
    apply_storage_settings(config)
    for key in locations:
        with _named(key):
            storage.normalize(setting(config, key))
    return config


@contextlib.contextmanager
def _named(key: str) -> Iterator[None]:
    """Prefix a StorageError with the setting it came from."""
    try:
        yield
    except StorageError as exc:
        raise StorageError(f"{key}: {exc}") from None


def check_outputs(config: Config, keys: tuple[str, ...]) -> None:
    """Fail fast, before any work starts, if an output location cannot be written (bucket, credentials)."""
    for key in keys:
        with _named(key):
            storage.check_writable(setting(config, key))


def exit_with(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> None:
    """Run an entry point's ``main`` and exit: InvsError -> one ``error:`` line and exit 2, Ctrl-C -> 130; Ray's known
    harmless error lines are dropped from its stderr meanwhile (:func:`invs.ray_session.known_noise_dropped`)."""
    from invs.ray_session import known_noise_dropped

    with known_noise_dropped():
        try:
            code = main(argv)
        except InvsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            code = 130
    sys.exit(code)
