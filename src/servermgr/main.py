"""The ``servermgr`` entry point: argv -> the command spec -> the command's handler.

Every command is parsed by one small parser against one spec
(``cli/commands.py``); only the chosen handler's module is imported, so
``ctl exec`` and ``node run`` load nothing they do not use. Typed errors
become one line on stderr and their exit code (under ``--json``: a JSON line,
``ctl/output.py``); ``--debug`` as the first argument shows the traceback
instead.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(sys.argv[1:] if argv is None else argv))


def run(argv: list[str]) -> int:
    from servermgr.common.errors import ServermgrError, single_error

    # Only as the first argument: a remote command may have its own --debug.
    debug = argv[:1] == ["--debug"]
    if debug:
        argv = argv[1:]
    # Until the parser has read the line: a usage error under --json is JSON too.
    as_json = "--json" in (argv[: argv.index("--")] if "--" in argv else argv)
    try:
        if argv[:1] == ["--version"]:
            from servermgr import __version__

            print(f"servermgr {__version__}")
            return 0
        if argv[:1] == ["__complete"]:  # asked by the completion scripts
            from servermgr.cli.completion import complete

            return complete(argv[1:])
        from servermgr.cli import spec
        from servermgr.cli.commands import ROOT

        try:
            parsed = spec.parse(ROOT, argv, os.environ)
        except spec.HelpRequested as shown:
            sys.stdout.write(shown.text)
            return 0
        as_json = bool(parsed.values.get("json"))
        assert parsed.cmd.run is not None
        module, _, name = parsed.cmd.run.partition(":")
        from importlib import import_module

        code = getattr(import_module(module), name)(parsed)
        return int(code or 0)
    except (ServermgrError, BaseExceptionGroup) as exc:
        found = single_error(exc)
        error = found if isinstance(found, ServermgrError) else None
        if debug or error is None:
            raise
        # The message may quote what Core or a node said: one safe line.
        from servermgr.common.text import printable

        if as_json:
            from servermgr.ctl.output import print_error

            print_error(error.code, printable(str(error)))
        else:
            sys.stderr.write(f"servermgr: {printable(str(error))}\n")
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `servermgr ctl nodes | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
