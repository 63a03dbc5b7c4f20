"""Shared start-up for config-service commands: settings with every problem at once."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Collection

from aibridge import logs
from aibridge.envconfig import SettingsError, add_env_flags, overrides_from_args
from config_service.seed.env import SeedConfigError, parse_env
from config_service.settings import ENV_VARS, ConfigServiceSettings

# The settings of a command that only works on the database (migrate, tokens --local).
DATABASE_VARS = (
    "AIBRIDGE_DATA_DIR",
    "AIBRIDGE_DATABASE_URL",
    "AIBRIDGE_LOG_FORMAT",
    "AIBRIDGE_LOG_LEVEL",
)


def env_vars(names: Collection[str] | None = None) -> list[tuple[str, str]]:
    """The config-service settings named (all of them with None), as (ENV_NAME, help)."""
    return [e for e in ENV_VARS if names is None or e[0] in names]


def parser(
    prog: str, description: str, names: Collection[str] | None = None
) -> argparse.ArgumentParser:
    """A parser with one flag per setting in `names` (every setting with None)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    add_env_flags(p, env_vars(names))
    return p


def load(args: argparse.Namespace, validate_seed: bool = False) -> ConfigServiceSettings | None:
    """Settings from env + flags; print every problem (settings and seeding) and return None."""
    problems: list[str] = []
    settings = None
    try:
        settings = ConfigServiceSettings.from_env(os.environ, overrides_from_args(args, ENV_VARS))
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
