"""The command-line grammar: commands, options and arguments as data, and the parser.

``cli/commands.py`` states every command once with these records; this module
parses argv against them, renders ``--help`` and the reference docs, and
answers completion. Pure: no I/O beyond reading the process environment
through the ``environ`` mapping it is given.

Grammar (the same for every command):

- options of a command's ancestors are accepted by the command too
  (``ctl --core X nodes`` and ``ctl nodes --core X`` mean the same);
- ``--name VALUE``, ``--name=VALUE``, ``-n VALUE``, ``-nVALUE``; ``--`` ends options;
- options may stand between arguments, except in a ``remote`` command
  (``ctl exec``): there the first word of the remote command ends them, so
  ``ctl exec node-01 -t 1s ls -la`` takes ``-t 1s`` and sends ``ls -la``.
"""

from __future__ import annotations

from servermgr.common.errors import UsageError

TYPE_CHECKING = False  # not typing's: importing typing costs every command ~4 ms
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any

HELP_FLAGS = ("-h", "--help")
WIDTH = 88  # help text is wrapped to this many columns

# The records below are plain classes, not NamedTuples: typing.NamedTuple
# compiles each field's (string) annotation when the class is made, which
# cost every command ~4 ms of start-up. Nothing compares them by value.


class Opt:
    """One option. ``metavar`` None makes it a flag (True when given)."""

    __slots__ = (
        "flags",
        "dest",
        "help",
        "metavar",
        "default",
        "env",
        "repeat",
        "choices",
        "check",
        "complete",
        "show_default",
        "targets",
    )

    def __init__(
        self,
        flags: tuple[str, ...],
        dest: str,
        help: str,
        metavar: str | None = None,
        default: Any = None,
        env: str | None = None,
        repeat: bool = False,  # may be given several times: a list
        choices: tuple[str, ...] = (),
        check: Callable[[str], Any] | None = None,  # converts; ValueError -> exit 2 with its text
        complete: str | None = None,  # what completion offers: "node", "label", "target", "file"
        show_default: bool = True,
        targets: bool = False,  # picks nodes (--all, --label): ``remote`` commands need no TARGET
    ) -> None:
        self.flags = flags
        self.dest = dest
        self.help = help
        self.metavar = metavar
        self.default = default
        self.env = env
        self.repeat = repeat
        self.choices = choices
        self.check = check
        self.complete = complete
        self.show_default = show_default
        self.targets = targets

    def __repr__(self) -> str:
        return f"Opt({self.flags!r}, {self.dest!r})"

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None

    def initial(self) -> Any:
        if self.repeat:
            return []
        return False if not self.takes_value else self.default


class Arg:
    """One positional argument; ``many`` takes the rest, ``optional`` may be absent."""

    __slots__ = ("name", "dest", "help", "optional", "many", "complete")

    def __init__(
        self,
        name: str,
        dest: str,
        help: str,
        optional: bool = False,
        many: bool = False,
        complete: str | None = None,
    ) -> None:
        self.name = name
        self.dest = dest
        self.help = help
        self.optional = optional
        self.many = many
        self.complete = complete

    def __repr__(self) -> str:
        return f"Arg({self.name!r})"


class Cmd:
    """A command (``run`` names its handler as ``module:function``) or a group (``children``)."""

    __slots__ = (
        "name",
        "help",
        "run",
        "options",
        "args",
        "children",
        "default_child",
        "remote",
        "hidden",
    )

    def __init__(
        self,
        name: str,
        help: str,
        run: str | None = None,
        options: tuple[Opt, ...] = (),
        args: tuple[Arg, ...] = (),
        children: tuple[Cmd, ...] = (),
        default_child: str | None = None,  # ``ctl node NAME`` means ``ctl node show NAME``
        remote: bool = False,  # TARGET then a remote command: its first word ends options
        hidden: bool = False,
    ) -> None:
        self.name = name
        self.help = help
        self.run = run
        self.options = options
        self.args = args
        self.children = children
        self.default_child = default_child
        self.remote = remote
        self.hidden = hidden

    def __repr__(self) -> str:
        return f"Cmd({self.name!r})"

    def child(self, name: str) -> Cmd | None:
        for c in self.children:
            if c.name == name:
                return c
        return None

    @property
    def summary(self) -> str:
        return self.help.strip().split("\n\n")[0].replace("\n", " ")


class Parsed:
    """What the parser found: the command path, its spec and every option/argument value.

    ``a.timeout`` reads a value by its ``dest``.
    """

    def __init__(self, path: tuple[str, ...], cmd: Cmd, values: dict[str, Any]) -> None:
        self.path = path
        self.cmd = cmd
        self.values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


class HelpRequested(Exception):
    """``--help``: print ``text`` on stdout and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def walk(cmd: Cmd, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Cmd]]:
    """Every visible command and group under ``cmd``, with its path, parents first."""
    path = path or (cmd.name,)
    yield path, cmd
    for c in cmd.children:
        if not c.hidden:
            yield from walk(c, (*path, c.name))


def parse(root: Cmd, argv: list[str], environ: Mapping[str, str]) -> Parsed:
    """Parse ``argv`` (without the program name). UsageError (exit 2) or HelpRequested."""
    path: tuple[str, ...] = (root.name,)
    cmd = root
    scope: list[Opt] = list(root.options)
    values: dict[str, Any] = {}
    i = 0
    # Groups: options and the sub-command name.
    while cmd.children:
        if i >= len(argv):
            raise HelpRequested(help_text(path, cmd, scope))
        arg = argv[i]
        if arg in HELP_FLAGS:
            raise HelpRequested(help_text(path, cmd, scope))
        if arg.startswith("-") and arg != "-":
            known = _find(scope, arg.partition("=")[0] if arg[1] == "-" else arg[:2]) is not None
            if known or cmd.default_child is None:
                i = _take_option(argv, i, scope, values, path)
                continue
            sub = None  # ``ctl node --json web-1``: an option of the default command
        else:
            sub = cmd.child(arg)
        if sub is None:
            if cmd.default_child is None:
                raise UsageError(_unknown("command", arg, [c.name for c in cmd.children], path))
            sub = cmd.child(cmd.default_child)
            assert sub is not None
        else:
            i += 1
        # The root's own options (--version) are not its commands' options.
        scope = [*scope, *sub.options] if cmd is not root else list(sub.options)
        cmd = sub
        path = (*path, sub.name)
    # A command: its options and arguments.
    words: list[str] = []
    rest_literal = False
    while i < len(argv):
        arg = argv[i]
        if rest_literal or not arg.startswith("-") or arg == "-":
            words.append(arg)
            i += 1
            if cmd.remote and not rest_literal and len(words) > _target_words(cmd, scope, values):
                rest_literal = True  # the remote command has started
            continue
        if arg == "--":
            rest_literal = True
            i += 1
            continue
        if arg in HELP_FLAGS:
            raise HelpRequested(help_text(path, cmd, scope))
        i = _take_option(argv, i, scope, values, path)
    for opt in scope:
        if opt.dest not in values:
            values[opt.dest] = _default(opt, environ, path)
    _assign(cmd, path, words, values)
    return Parsed(path, cmd, values)


def _target_words(cmd: Cmd, scope: list[Opt], values: Mapping[str, Any]) -> int:
    """How many leading words of a remote command are ours: its plain arguments (a
    schedule's NAME) and TARGET, which --all/--label stand for."""
    picked = any(opt.targets and values.get(opt.dest) for opt in scope)
    return lead_words(cmd, picked)


def lead_words(cmd: Cmd, picked: bool) -> int:
    """The words before a remote command's own: plain arguments, then TARGET unless picked."""
    return sum(1 for a in cmd.args if not a.many) + (0 if picked else 1)


def _find(scope: list[Opt], flag: str) -> Opt | None:
    for opt in scope[::-1]:  # a command's own option wins over an ancestor's
        if flag in opt.flags:
            return opt
    return None


def _take_option(
    argv: list[str], i: int, scope: list[Opt], values: dict[str, Any], path: tuple[str, ...]
) -> int:
    """Store the option at ``argv[i]``; the index after it."""
    arg = argv[i]
    inline: str | None = None
    if arg.startswith("--"):
        flag, eq, value = arg.partition("=")
        inline = value if eq else None
    elif len(arg) > 2:
        flag, inline = arg[:2], arg[2:]  # -t1s
    else:
        flag = arg
    opt = _find(scope, flag)
    if opt is None:
        flags = [f for o in scope for f in o.flags if f.startswith("--")]
        raise UsageError(_unknown("option", flag, flags, path))
    if not opt.takes_value:
        if inline is not None:
            if arg.startswith("--"):
                raise UsageError(f"option {flag} takes no value ({_see(path)})")
            raise UsageError(_unknown("option", arg, [f for o in scope for f in o.flags], path))
        values[opt.dest] = True
        return i + 1
    if inline is None:
        if i + 1 >= len(argv):
            raise UsageError(f"option {flag} needs a value: {opt.metavar} ({_see(path)})")
        inline, i = argv[i + 1], i + 1
    value = _convert(opt, flag, inline, path)
    if opt.repeat:
        values.setdefault(opt.dest, []).append(value)
    else:
        values[opt.dest] = value
    return i + 1


def _convert(opt: Opt, flag: str, text: str, path: tuple[str, ...]) -> Any:
    if opt.choices and text not in opt.choices:
        raise UsageError(f"{flag} {text!r}: use one of {', '.join(opt.choices)}")
    if opt.check is None:
        return text
    try:
        return opt.check(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _default(opt: Opt, environ: Mapping[str, str], path: tuple[str, ...]) -> Any:
    if opt.env and environ.get(opt.env):
        return _convert(opt, opt.env, environ[opt.env], path)
    if isinstance(opt.default, str) and opt.check is not None:
        return _convert(opt, opt.flags[0], opt.default, path)
    return opt.initial()


def _assign(cmd: Cmd, path: tuple[str, ...], words: list[str], values: dict[str, Any]) -> None:
    i = 0
    for arg in cmd.args:
        if arg.many:
            if not arg.optional and i >= len(words):
                raise UsageError(f"missing {arg.name} ({_see(path)})")
            values[arg.dest] = words[i:]
            i = len(words)
        elif i < len(words):
            values[arg.dest] = words[i]
            i += 1
        elif arg.optional:
            values[arg.dest] = None
        else:
            raise UsageError(f"missing {arg.name} ({_see(path)})")
    if i < len(words):
        raise UsageError(f"unexpected argument {words[i]!r} ({_see(path)})")


def _see(path: tuple[str, ...]) -> str:
    return f"see: {' '.join(path)} --help"


def _unknown(what: str, word: str, known: list[str], path: tuple[str, ...]) -> str:
    from difflib import get_close_matches

    close = get_close_matches(word, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"no such {what}: {word}{hint} ({_see(path)})"


# --- help ----------------------------------------------------------------------


def usage(path: tuple[str, ...], cmd: Cmd) -> str:
    parts = [" ".join(path), "[OPTIONS]"]
    if cmd.children:
        parts.append("COMMAND [ARGS]...")
    for a in cmd.args:
        name = a.name + ("..." if a.many else "")
        parts.append(f"[{name}]" if a.optional else name)
    return " ".join(parts)


def option_label(opt: Opt) -> str:
    shorts = [f for f in opt.flags if not f.startswith("--")]
    longs = [f for f in opt.flags if f.startswith("--")]
    label = ", ".join([*shorts, *longs])
    return f"{label} {opt.metavar}" if opt.metavar else label


def option_help(opt: Opt) -> str:
    text = opt.help
    if opt.choices and "one of" not in text:
        text += f" One of: {', '.join(opt.choices)}."
    extras = []
    if opt.env:
        extras.append(f"env: {opt.env}")
    if opt.takes_value and opt.default is not None and opt.show_default:
        extras.append(f"default: {opt.default}")
    if opt.repeat:
        extras.append("repeatable")
    return text + (f" [{'; '.join(extras)}]" if extras else "")


def help_text(path: tuple[str, ...], cmd: Cmd, scope: list[Opt]) -> str:
    """What ``--help`` prints: usage, description, arguments, commands, options."""
    from textwrap import fill, wrap

    lines = [f"Usage: {usage(path, cmd)}", ""]
    for para in cmd.help.strip().split("\n\n"):
        lines += [fill(" ".join(para.split()), WIDTH), ""]

    def table(title: str, rows: list[tuple[str, str]]) -> None:
        if not rows:
            return
        width = min(max(len(r[0]) for r in rows), 26)
        lines.append(f"{title}:")
        for left, right in rows:
            text = wrap(right, max(WIDTH - width - 4, 30)) or [""]
            if len(left) > width:
                lines.append(f"  {left}")
            else:
                lines.append(f"  {left:{width}}  {text.pop(0)}")
            lines.extend(f"  {'':{width}}  {t}" for t in text)
        lines.append("")

    table("Arguments", [(a.name, a.help) for a in cmd.args])
    table("Commands", [(c.name, c.summary) for c in cmd.children if not c.hidden])
    own = {id(o) for o in cmd.options}
    table(
        "Options",
        [(option_label(o), option_help(o)) for o in scope if id(o) in own]
        + [("-h, --help", "Show this message and exit.")],
    )
    table(
        "Options of " + " ".join(path[:-1] or path),
        [(option_label(o), option_help(o)) for o in scope if id(o) not in own],
    )
    return "\n".join(lines).rstrip() + "\n"


def scope_of(root: Cmd, path: tuple[str, ...]) -> tuple[Cmd, list[Opt]]:
    """The command at ``path`` (names after the root's) and every option it accepts."""
    cmd, scope = root, list(root.options)
    for name in path:
        sub = cmd.child(name)
        if sub is None:
            break
        scope = [*scope, *sub.options] if cmd is not root else list(sub.options)
        cmd = sub
    return cmd, scope
