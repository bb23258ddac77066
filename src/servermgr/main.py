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
        from servermgr.cli import app

        app()
    except (ServermgrError, BaseExceptionGroup) as exc:
        found = single_error(exc)
        error = found if isinstance(found, ServermgrError) else None
        if debug or error is None:
            raise
        sys.stderr.write(f"servermgr: {error}\n")
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
