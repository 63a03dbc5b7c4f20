"""Parsing helpers for settings loaded from an environment mapping (and flags).

Settings classes are frozen dataclasses built by `from_env(environ, overrides)`;
they use a `Reader` so that every bad value is collected and reported at once as
one `SettingsError`, instead of failing on the first.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from pathlib import Path

from aibridge.coder_options import CoderOptions, coder_names

PREFIX = "AIBRIDGE_"


class SettingsError(Exception):
    """One or more settings are invalid; `problems` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in self.problems))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Reader:
    """Reads typed values from an environment mapping, collecting problems."""

    def __init__(
        self,
        environ: Mapping[builtins.str, builtins.str],
        overrides: Mapping[builtins.str, builtins.str] | None = None,
        coder: CoderOptions | None = None,
    ):
        self._env = dict(environ)
        # Flags win over the environment: they arrive as {ENV_NAME: value}.
        for key, value in (overrides or {}).items():
            self._env[key] = value
        self.problems: list[builtins.str] = []
        self._origin: dict[builtins.str, builtins.str] = {}  # ours -> the Coder name read
        if coder is not None:
            self._read_coder(coder)

    def _read_coder(self, coder: CoderOptions) -> None:
        """Coder's names of our settings read as aliases; unsupported ones refused."""
        for ours, suffix in coder.aliases.items():
            given = [(v, self.raw(v)) for v in coder_names(suffix) if self.raw(v)]
            if not given:
                continue
            names = [ours] if self.raw(ours) else []
            names += [name for name, _ in given]
            if len({self.raw(name) for name in names}) > 1:
                self.problems.append(
                    f"{' and '.join(names)} are set to different values; keep only {names[0]}"
                )
            elif not self.raw(ours):
                self._env[ours], self._origin[ours] = str(given[0][1]), given[0][0]
        for suffix, (off, why) in coder.unsupported.items():
            for name in coder_names(suffix):
                value = self.raw(name)
                if value and value.lower() != off:
                    self.problems.append(
                        f"{name} is set, but AI Bridge has no equivalent ({why}); refusing to "
                        "start rather than ignore it: unset it"
                    )

    def label(self, name: builtins.str) -> builtins.str:
        """The variable a value was read from: ours, or the Coder name it came from."""
        return self._origin.get(name, name)

    def raw(self, name: builtins.str) -> builtins.str | None:
        value = self._env.get(name)
        return None if value is None else value.strip()

    def str(self, name: builtins.str, default: builtins.str = "") -> builtins.str:
        value = self.raw(name)
        return default if value is None or value == "" else value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        value = self.raw(name)
        if value is None or value == "":
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        self.problems.append(f"{self.label(name)}={value!r}: expected true or false")
        return default

    def int(
        self, name: builtins.str, default: builtins.int, minimum: builtins.int | None = None
    ) -> builtins.int:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            parsed = int(value)
        except ValueError:
            self.problems.append(f"{self.label(name)}={value!r}: expected a whole number")
            return default
        if minimum is not None and parsed < minimum:
            self.problems.append(f"{self.label(name)}={value!r}: must be at least {minimum}")
            return default
        return parsed

    def duration(self, name: builtins.str, default: float) -> float:
        """Seconds, from '30s', '500ms', '2m', '1h' or a bare number of seconds."""
        value = self.raw(name)
        if value is None or value == "":
            return default
        match = _DURATION.match(value)
        if not match:
            self.problems.append(
                f"{self.label(name)}={value!r}: expected a duration such as 30s or 500ms"
            )
            return default
        number = float(match.group(1))
        unit = match.group(2) or "s"
        return number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]

    def listen(
        self, name: builtins.str, default: builtins.str
    ) -> tuple[builtins.str, builtins.int]:
        """host:port (IPv6 as [::1]:port); port 0 picks a free port."""
        value = self.str(name, default)
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            self.problems.append(f"{self.label(name)}={value!r}: expected host:port")
            host, port = default.rsplit(":", 1)
        host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - an explicit ':port' means all
        return host, int(port)

    def existing_file(self, name: builtins.str) -> Path | None:
        value = self.str(name)
        if not value:
            return None
        path = Path(value).expanduser()
        if not path.is_file():
            self.problems.append(f"{self.label(name)}={value!r}: no such file")
        return path

    def csv(self, name: builtins.str, default: builtins.str = "") -> list[builtins.str]:
        return [part.strip() for part in self.str(name, default).split(",") if part.strip()]

    def log_settings(self) -> tuple[builtins.str, builtins.str]:
        """(format, level) from AIBRIDGE_LOG_FORMAT / AIBRIDGE_LOG_LEVEL, both validated."""
        fmt = self.str("AIBRIDGE_LOG_FORMAT").lower()
        if fmt not in ("", "json", "console"):
            self.problems.append(f"AIBRIDGE_LOG_FORMAT={fmt!r}: expected json or console")
            fmt = ""
        level = self.str("AIBRIDGE_LOG_LEVEL", "info").lower()
        if level not in ("debug", "info", "warning", "error"):
            self.problems.append(
                f"AIBRIDGE_LOG_LEVEL={level!r}: expected debug, info, warning or error"
            )
            level = "info"
        return fmt, level

    def check(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


def default_data_dir() -> Path:
    """A per-user data directory (XDG on Linux, ~/Library on macOS)."""
    import os
    import sys

    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "aibridge"


def flag_for(env_name: str) -> str:
    """AIBRIDGE_BRIDGE_LISTEN -> --bridge-listen: every setting is also a flag."""
    return "--" + env_name.removeprefix(PREFIX).lower().replace("_", "-")


def add_env_flags(parser: object, names: list[tuple[str, str]]) -> None:
    """Add one flag per (ENV_NAME, help) pair to an argparse parser."""
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    for env_name, help_text in names:
        parser.add_argument(
            flag_for(env_name),
            dest=env_name,
            default=None,
            metavar="VALUE",
            help=f"{help_text} (env {env_name})",
        )


def overrides_from_args(args: object, names: list[tuple[str, str]]) -> dict[str, str]:
    """The flags that were given, as {ENV_NAME: value}, to pass to Reader."""
    given: dict[str, str] = {}
    for env_name, _ in names:
        value = getattr(args, env_name, None)
        if value is not None:
            given[env_name] = str(value)
    return given
