"""The node's execution policy: pure decisions, no processes."""

from __future__ import annotations

from typing import Any

import pytest

from servermgr.common import proto
from servermgr.common.config import ExecConfig, FilesConfig
from servermgr.node.policy import (
    DISABLED,
    SHELL_OFF,
    check,
    check_file,
    check_shell,
    check_upgrade,
    validate_unit,
)


def shell(command: str, *, timeout: float = 10.0) -> proto.JobRun:
    return proto.JobRun("j1", command, None, timeout, 1024)


def service(action: Any, unit: str) -> proto.JobRun:
    return proto.JobRun("j1", None, proto.ServiceAction(action, unit), 10.0, 1024)


def test_default_policy_allows_any_command() -> None:
    assert check(shell("echo hi; uptime"), ExecConfig()) is None
    assert check(service("restart", "nginx"), ExecConfig()) is None


def test_disabled_refuses_everything() -> None:
    policy = ExecConfig(enabled=False)
    assert check(shell("echo hi"), policy) == DISABLED
    assert check(service("status", "nginx"), policy) == DISABLED
    assert "[exec] enabled = false" in DISABLED


def test_exactly_one_of_command_and_service() -> None:
    both = proto.JobRun("j1", "echo", proto.ServiceAction("status", "nginx"), 1.0, 0)
    neither = proto.JobRun("j1", None, None, 1.0, 0)
    assert "not both" in (check(both, ExecConfig()) or "")
    assert "not neither" in (check(neither, ExecConfig()) or "")


def test_timeout_over_limit_is_refused_naming_both_numbers() -> None:
    policy = ExecConfig(max_timeout=60)
    reason = check(shell("echo", timeout=90), policy)
    assert reason is not None
    assert "90" in reason
    assert "60" in reason
    assert "max_timeout" in reason
    assert check(shell("echo", timeout=60), policy) is None


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        ("uptime", True),
        ("uptime ", True),  # the same words
        ("df -h", True),
        ("df -hT", True),
        ("df -h /var", False),  # a wildcard never adds an argument
        ("systemctl status nginx", True),
        ("systemctl status nginx sshd", False),
        ("systemctl status --help", False),  # nor stands for an option
        ("rm -rf /", False),
        ("df -h; rm -rf /", False),  # nor for shell syntax
        ("df -h && reboot", False),
        ("df -h | mail x", False),
        ("df -h `reboot`", False),
        ("df -h $(reboot)", False),
        ("df -h > /etc/passwd", False),
        ("df -h\nreboot", False),
        ("UPTIME", False),  # case-sensitive
        ("tail -n 50 /var/log/syslog | grep error", True),  # syntax spelled out
        ("tail -n 50 /var/log/syslog | grep x; reboot", False),
        ("tail -n 50 /var/log/../../etc/shadow | grep x", False),
        ("cat /var/log/syslog", True),
        ("cat /var/log/nginx/access.log", False),  # * stays within one segment
        ("cat /var/log/../../etc/shadow", False),
        ("cat /var/log/syslog /etc/shadow", False),
        ("cat '/var/log/syslog /etc/shadow'", False),  # one word, but not a plain one
        ("cat /var/log/*", False),  # the shell would expand it
        ("cat /var/log/syslog*", False),
        ("ls /srv/www/a/b/c", True),  # ** crosses segments
        ("ls /srv/www/a/../../../etc", False),
        ("ls /srv/www/a b", False),
    ],
)
def test_allow_list(command: str, allowed: bool) -> None:
    policy = ExecConfig(
        allow=(
            "uptime",
            "df -h*",
            "systemctl status *",
            "tail -n * /var/log/* | grep *",
            "cat /var/log/*",
            "ls /srv/www/**",
        )
    )
    reason = check(shell(command), policy)
    assert (reason is None) == allowed, reason


def env_job(env: dict[str, str], *, cwd: str | None = None) -> proto.JobRun:
    return proto.JobRun("j1", "uptime", None, 10.0, 1024, env=env, cwd=cwd)


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "PATH",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PERL5OPT",
        "NODE_OPTIONS",
        "BASH_ENV",
        "ENV",
        "GLIBC_TUNABLES",
        "GCONV_PATH",
        "IFS",
        "BASH_FUNC_uptime%%",
        "GIT_SSH_COMMAND",
        "OPENSSL_CONF",
        "SYSTEMD_PAGER",
        "HOME",
    ],
)
def test_loader_variables_are_refused_with_or_without_an_allow_list(name: str) -> None:
    for policy in (ExecConfig(), ExecConfig(allow=("uptime",))):
        reason = check(env_job({name: "/tmp/evil.so"}), policy)
        assert reason is not None
        assert "allow_env" in reason or "not a valid name" in reason


def test_allow_env_opens_named_variables_only() -> None:
    policy = ExecConfig(allow=("uptime",), allow_env=("PATH", "APP_*"))
    assert check(env_job({"PATH": "/opt/bin", "APP_MODE": "x", "LANG": "C"}), policy) is None
    reason = check(env_job({"PATH": "/opt/bin", "LD_PRELOAD": "/tmp/x.so"}), policy)
    assert reason is not None
    assert "LD_PRELOAD" in reason


@pytest.mark.parametrize("name", ["A=B", "", "1X", "A B", "A\0B", "é"])
def test_env_names_must_be_posix_names(name: str) -> None:
    reason = check(env_job({name: "v"}), ExecConfig())
    assert reason is not None
    assert "not a valid name" in reason


def test_env_values_may_not_hold_nul() -> None:
    assert "NUL" in (check(env_job({"X": "a\0b"}), ExecConfig()) or "")
    assert check(env_job({"X": "any text; $(even this)"}), ExecConfig()) is None


@pytest.mark.parametrize(
    ("cwd", "ok"),
    [
        ("/srv/app", True),
        ("/", True),
        ("relative", False),
        ("/srv/../etc", False),
        ("/srv/./app", False),
        ("/srv/app/", False),
        ("//srv", False),
        ("/srv\0x", False),
    ],
)
def test_cwd_must_be_a_normal_absolute_path(cwd: str, ok: bool) -> None:
    reason = check(env_job({}, cwd=cwd), ExecConfig())
    assert (reason is None) == ok, reason


def test_cwd_under_an_allow_list_needs_allow_cwd() -> None:
    strict = ExecConfig(allow=("uptime",))
    assert check(env_job({}), strict) is None
    reason = check(env_job({}, cwd="/tmp"), strict)
    assert reason is not None
    assert "allow_cwd" in reason
    opened = ExecConfig(allow=("uptime",), allow_cwd=("/srv/*", "/var/www/**"))
    assert check(env_job({}, cwd="/srv/app"), opened) is None
    assert check(env_job({}, cwd="/var/www/a/b"), opened) is None
    assert check(env_job({}, cwd="/srv/app/sub"), opened) is not None
    assert check(env_job({}, cwd="/etc"), opened) is not None


def test_nul_in_a_command_is_refused() -> None:
    assert "NUL" in (check(shell("echo a\0b"), ExecConfig()) or "")


def test_allow_refusal_says_which_rule() -> None:
    reason = check(shell("rm -rf /"), ExecConfig(allow=("uptime", "df *")))
    assert reason is not None
    assert "[exec] allow" in reason
    assert "'rm -rf /'" in reason
    assert "'uptime'" in reason
    reason = check(shell("df; reboot"), ExecConfig(allow=("df*",)))
    assert reason is not None
    assert "'df*'" in reason
    assert "shell syntax" in reason
    reason = check(shell("cat /var/log/../../etc/shadow"), ExecConfig(allow=("cat /var/log/**",)))
    assert reason is not None
    assert "'..'" in reason
    reason = check(shell("df -h / /boot"), ExecConfig(allow=("df -h *",)))
    assert reason is not None
    assert "one word" in reason


def test_allow_list_applies_to_service_actions() -> None:
    policy = ExecConfig(allow=("systemctl restart nginx", "systemctl status *"))
    assert check(service("restart", "nginx"), policy) is None
    assert check(service("status", "postgresql@15-main.service"), policy) is None
    reason = check(service("stop", "nginx"), policy)
    assert reason is not None
    assert "systemctl stop nginx" in reason


def test_service_unit_is_validated_by_check() -> None:
    reason = check(service("restart", "nginx; rm -rf /"), ExecConfig())
    assert reason is not None
    assert "nginx; rm -rf /" in reason


@pytest.mark.parametrize(
    "unit",
    [
        "nginx",
        "nginx.service",
        "sshd.socket",
        "multi-user.target",
        "logrotate.timer",
        "home.mount",
        "getty@tty1.service",
        "getty@.service",
        "container@web",
        "systemd-fsck@dev-disk-by\\x2duuid-1234.service",
        "php8.2-fpm",
        "user-1000.slice",
        "dev-sda1.device",
        "a:b_c",
        "x" * 247,  # + ".service" is 255
    ],
)
def test_valid_units(unit: str) -> None:
    assert validate_unit(unit) is None


@pytest.mark.parametrize(
    ("unit", "why"),
    [
        ("nginx; rm -rf /", "characters"),
        ("nginx rm", "characters"),
        ("$(reboot)", "characters"),
        ("ng*nx", "characters"),
        ("nginx/../x", "characters"),
        ("ünit", "characters"),
        ("", "empty"),
        ("-H.service", "start with '-'"),
        ("--help", "start with '-'"),
        (".service", "start with '.'"),
        ("nginx.", "end with '.'"),
        ("x" * 248, "longer than 255"),
        ("x" * 250 + ".timer", "longer than 255"),
        ("a@b@c.service", "more than one '@'"),
        ("@foo.service", "template name"),
    ],
)
def test_invalid_units(unit: str, why: str) -> None:
    reason = validate_unit(unit)
    assert reason is not None
    assert why in reason


def test_long_commands_are_shortened_in_reasons() -> None:
    reason = check(shell("x" * 10_000), ExecConfig(allow=("uptime",)))
    assert reason is not None
    assert len(reason) < 400
    assert "10000 characters" in reason


def test_files_default_follows_the_exec_policy() -> None:
    """With no [files] lists: any path when any command may run, none with an allow list."""
    files = FilesConfig()
    assert check_file("write", "/etc/nginx/nginx.conf", files, ExecConfig()) is None
    assert check_file("read", "/var/log/syslog", files, ExecConfig()) is None
    for policy in (ExecConfig(allow=("uptime",)), ExecConfig(enabled=False)):
        why = check_file("write", "/tmp/x", files, policy)
        assert why is not None
        assert "[files] write" in why


def test_files_globs_decide_and_paths_must_be_normal() -> None:
    files = FilesConfig(read=("/var/log/**",), write=("/etc/nginx/*.conf", "/srv/app/**"))
    policy = ExecConfig(allow=("uptime",))
    assert check_file("write", "/etc/nginx/nginx.conf", files, policy) is None
    assert check_file("write", "/srv/app/a/b/c.bin", files, policy) is None
    assert check_file("read", "/var/log/nginx/access.log", files, policy) is None
    refused = {
        ("write", "/etc/nginx/conf.d/x.conf"): "matches no pattern",  # * stays in one segment
        ("write", "/etc/passwd"): "matches no pattern",
        ("read", "/etc/nginx/nginx.conf"): "[files] read",
        ("write", "/srv/app/../../etc/passwd"): "without '.', '..'",
        ("write", "relative/x"): "must be absolute",
        ("write", "//srv/app/x"): "repeated '/'",
        ("write", "/srv/app/x\0"): "not a usable path",
        ("write", "/"): "directory",
    }
    for (access, path), reason in refused.items():
        why = check_file(access, path, files, policy)
        assert why is not None, path
        assert reason in why, (path, why)


def test_shell_is_off_unless_the_node_says_so() -> None:
    assert check_shell(ExecConfig()) == SHELL_OFF
    assert check_shell(ExecConfig(shell=True)) is None
    assert check_shell(ExecConfig(shell=True, enabled=False)) == DISABLED


def test_upgrades_follow_the_exec_policy_unless_said() -> None:
    assert check_upgrade(ExecConfig()) is None
    assert check_upgrade(ExecConfig(allow=("uptime",))) is not None
    assert check_upgrade(ExecConfig(enabled=False)) is not None
    assert check_upgrade(ExecConfig(allow=("uptime",), allow_upgrade=True)) is None
    refused = check_upgrade(ExecConfig(allow_upgrade=False))
    assert refused is not None
    assert "allow_upgrade = false" in refused
