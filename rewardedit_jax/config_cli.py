"""Running an absl CLI whose ``--config`` is an ``ml_collections`` config file (``train``, ``aot``).

``config_flags`` reports a bad ``--config.key=value`` override (an unknown key, a value of the wrong type)
or an unreadable config file as a Python traceback raised from inside flag parsing; here it becomes one
line naming the argument, and exit status 2, before anything is imported or compiled.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence

from absl import app, flags


def _override_args(argv: Sequence[str]) -> list[str]:
    return [a for a in argv[1:] if a.startswith("--config.")]


def _missing_key(exc: BaseException) -> tuple[str, str | None]:
    """The key an ``AttributeError``/``KeyError`` of a ConfigDict names, and the key it suggests instead.

    ml_collections wraps a ``KeyError`` whose message is the quoted key, then for a near miss a second line
    ``Did you mean "x" instead of "y"?``; ``str()`` of either shows that message escaped, as a repr.
    """
    while exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    message = str(exc.args[0]) if exc.args else str(exc)
    first, _, rest = message.partition("\n")
    suggestion = re.search(r'Did you mean "([^"]+)"', rest)
    return first.strip("\"'"), suggestion.group(1) if suggestion else None


def describe_parse_error(argv: Sequence[str], exc: BaseException) -> str:
    """One line for ``exc``, raised while parsing ``argv``, naming the argument that caused it."""
    text = " ".join(str(exc).split()).strip("\"'")
    overrides = _override_args(argv)
    if isinstance(exc, (AttributeError, KeyError)):
        key, suggestion = _missing_key(exc)
        for arg in overrides:
            path = arg[len("--config.") :].split("=", 1)[0].split(".")
            if key in path:
                parents = path[: path.index(key)]
                line = f"{arg}: the config has no key {'.'.join([*parents, key])!r}"
                return line + (f" (did you mean {'.'.join([*parents, suggestion])!r}?)" if suggestion else "")
    for arg in overrides:
        name = arg[len("--config.") :].split("=", 1)[0].split(".")[-1]
        if f"'{name}'" in text or f"{name!r}" in text:
            return f"{arg}: {text}"
    args = list(argv[1:])
    config = next((a for a in args if a.startswith("--config=")), "--config")
    if "--config" in args[:-1]:
        config = f"--config {args[args.index('--config') + 1]}"
    if isinstance(exc, OSError):  # config_flags lists every path it tried; the last line says why
        reason = str(exc).strip().splitlines()[-1].strip()
        return f"{config}: cannot load the config file: {reason}"
    return f"{config}: {text}" if text else f"{config}: {type(exc).__name__}"


def run(main: Callable[[list[str]], int], required: Sequence[str]) -> None:
    """``app.run(main)`` with ``required`` flags and one-line errors for bad config arguments."""
    flags.mark_flags_as_required(list(required))

    def parse(argv: list[str]) -> list[str]:
        try:
            rest = flags.FLAGS(argv)
            config = flags.FLAGS["config"].value
            if config is not None:
                config.keys()  # config_flags defers a file's load error to the first use
            return rest
        except flags.Error as exc:  # absl's own message names the flag; it may span lines
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            sys.exit(2)
        except Exception as exc:  # raised by config_flags while loading or overriding the config
            print(f"error: {describe_parse_error(argv, exc)}", file=sys.stderr)
            sys.exit(2)

    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse)
