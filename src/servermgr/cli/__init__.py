"""The ``servermgr`` command line: one command spec, a small parser, lazy handlers.

    main.py           argv -> spec.parse -> the handler; typed errors -> one line + exit code
    cli/spec.py       the grammar (Cmd, Opt, Arg), the parser, --help (pure)
    cli/commands.py   every command, option and default, once (how to add one: its docstring)
    cli/admin.py      handlers of core / node / up / key
    cli/completion.py bash/zsh/fish scripts and the candidates they ask for
    cli/reference.py  docs/reference/cli.md's command sections, generated from the spec
    ctl/commands.py   handlers of ctl (exec and service in ctl/exec.py)

Why not typer: docs/decisions.md ("One small parser for the CLI, not typer").
"""
