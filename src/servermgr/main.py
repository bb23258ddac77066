"""The ``servermgr`` entry point.

``ctl exec`` and ``ctl service`` run without importing typer (ctl/fastpath.py:
it is the command users time); everything else goes to the typer app in
cli.py. Typed errors become one line on stderr and their exit code; ``--debug``
as the first argument shows the traceback instead.
"""

from __future__ import annotations

import sys


def main() -> None:
    from servermgr.common.errors import ServermgrError, single_error

    # Only as the first argument: a remote command may have its own --debug.
    debug = sys.argv[1:2] == ["--debug"]
    if debug:
        del sys.argv[1]
    try:
        if sys.argv[1:2] == ["ctl"]:
            from servermgr.ctl import fastpath

            code = fastpath.main(sys.argv[1:])
            if code is not None:
                sys.exit(code)
        elif sys.argv[1:3] == ["node", "run"] and _node_run(sys.argv[3:]):
            return
        from servermgr.cli import app

        app()
    except (ServermgrError, BaseExceptionGroup) as exc:
        found = single_error(exc)
        error = found if isinstance(found, ServermgrError) else None
        if debug or error is None:
            raise
        # The message may quote what Core or a node said: one safe line.
        from servermgr.common.text import printable

        sys.stderr.write(f"servermgr: {printable(str(error))}\n")
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def _node_run(args: list[str]) -> bool:
    """``node run [--config FILE]`` without typer: the agent stays small (~7 MiB less).

    False (typer handles it) for anything else, such as ``--help``.
    """
    config: str | None = None
    if args and args[0] in ("-c", "--config") and len(args) == 2:
        config = args[1]
    elif len(args) == 1 and args[0].startswith("--config="):
        config = args[0].split("=", 1)[1]
    elif args:
        return False
    from pathlib import Path

    from servermgr.node.run import run_agent

    run_agent(Path(config) if config else None)
    return True
