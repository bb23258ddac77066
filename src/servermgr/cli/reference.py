"""The synopses of docs/reference/cli.md, generated from the command spec.

Each ``### servermgr ...`` section of the reference opens with a code block
holding the command's synopsis; this module writes those blocks from
``cli/commands.py`` so they cannot drift (``tests/test_docs.py`` checks that
the file equals its regenerated self). The prose and option tables around
them are written by hand; the docs test checks that every option is named in
its section.

    python -m servermgr.cli.reference docs/reference/cli.md   # rewrite in place
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from servermgr.cli import spec
from servermgr.cli.commands import ROOT

WIDTH = 88


def synopsis(path: tuple[str, ...], cmd: spec.Cmd) -> str:
    """``servermgr ctl exec [-a] [-t DURATION] ... TARGET COMMAND...``, wrapped; a
    group with a default command and a remote command get their second form."""
    forms = [_form(path, cmd, cmd.args)]
    if cmd.default_child:
        default = cmd.child(cmd.default_child)
        assert default is not None
        forms.append(_wrap([" ".join(path), *(_arg(a) for a in default.args), "..."]))
    if cmd.remote:
        picks = " | ".join(_opt(o).strip("[]") for o in cmd.options if o.targets)
        rest = [_arg(a).replace("TARGET ", "") for a in cmd.args]
        forms.append(_wrap([" ".join(path), "[OPTIONS]", f"({picks})", *rest]))
    return "\n".join(forms)


def _opt(opt: spec.Opt) -> str:
    flag = min(opt.flags, key=len)
    if opt.choices and len(opt.choices) <= 4:
        return f"[{flag} {'|'.join(opt.choices)}]"
    return f"[{flag} {opt.metavar}]" if opt.metavar else f"[{flag}]"


def _arg(arg: spec.Arg) -> str:
    name = arg.name + ("..." if arg.many else "")
    return f"[{name}]" if arg.optional else name


def _form(path: tuple[str, ...], cmd: spec.Cmd, args: tuple[spec.Arg, ...]) -> str:
    words = [" ".join(path), *(_opt(o) for o in cmd.options)]
    if cmd.children:
        words.append("COMMAND ...")
    return _wrap(words + [_arg(a) for a in args])


def _wrap(words: list[str]) -> str:
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > WIDTH:
            lines.append(line)
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join([*lines, line])


def blocks() -> dict[str, str]:
    return {" ".join(path): synopsis(path, cmd) for path, cmd in spec.walk(ROOT)}


_SECTION = re.compile(r"^### (servermgr[^\n]*)\n\n```\n(.*?)\n```", re.M | re.S)


def rewrite(text: str) -> str:
    """``text`` with each command section's first code block generated."""
    wanted = blocks()

    def one(m: re.Match[str]) -> str:
        title = m.group(1).strip()
        if title not in wanted:
            return m.group(0)
        return f"### {title}\n\n```\n{wanted[title]}\n```"

    return _SECTION.sub(one, text)


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "docs/reference/cli.md")
    text = path.read_text(encoding="utf-8")
    new = rewrite(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"rewrote the synopses in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
