"""Shared start-up for config-service commands: settings with every problem at once."""

from __future__ import annotations

import argparse
import os
import sys

from aibridge import logs
from aibridge.envconfig import DATA_DIR, LOG_FORMAT, LOG_LEVEL, XDG_DATA_HOME, Schema, SettingsError
from config_service.errors import ConfigError
from config_service.seed.env import SeedConfigError, parse_env
from config_service.settings import DATABASE_URL, SETTINGS, ConfigServiceSettings

# The settings of a command that only works on the database (migrate, tokens --local).
DATABASE_SETTINGS = SETTINGS.only(
    *(s.env for s in (DATA_DIR, XDG_DATA_HOME, DATABASE_URL, LOG_FORMAT, LOG_LEVEL))
)


def failed(prog: str, exc: Exception) -> int:
    """Print one line for an error a command ends on; the exit code: 1 when the config
    service refused (a `ConfigError`), 2 for what the user must fix first (bad settings,
    a port that cannot be bound)."""
    if isinstance(exc, ConfigError):
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return 1
    print(f"{prog}: {exc}", file=sys.stderr)
    return 2


def parser(prog: str, description: str, schema: Schema = SETTINGS) -> argparse.ArgumentParser:
    """A parser with one flag per setting of `schema` (every config-service setting)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    schema.add_flags(p)
    return p


def load(args: argparse.Namespace, validate_seed: bool = False) -> ConfigServiceSettings | None:
    """Settings from env + flags; print every problem (settings and seeding) and return None."""
    problems: list[str] = []
    settings = None
    try:
        settings = ConfigServiceSettings.from_env(os.environ, SETTINGS.given(args))
    except SettingsError as exc:
        problems += exc.problems
    if validate_seed:
        try:
            parse_env(os.environ)
        except SeedConfigError as exc:
            problems += exc.problems
    if problems:
        print("aibridge: invalid configuration:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return None
    assert settings is not None
    logs.configure(settings.log_level, settings.log_format)
    return settings
