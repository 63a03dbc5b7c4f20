"""`aibridge rotate-keys`: re-encrypt stored secrets under the first encryption key.

Rotation: put the new key first in AIBRIDGE_ENCRYPTION_KEYS (keep the old ones after
it), run this command, then remove the old keys once it reports no failures.
"""

from __future__ import annotations

import sys

from config_service.commands.common import DATABASE_SETTINGS, failed, load, parser
from config_service.crypto import Cipher
from config_service.db import migrate
from config_service.db.engine import make_engine
from config_service.errors import ConfigError
from config_service.settings import ENCRYPTION_KEYS, SETTINGS
from config_service.store.database import Database
from config_service.store.rotation import rotate


def main(argv: list[str], prog: str = "aibridge rotate-keys") -> int:
    schema = DATABASE_SETTINGS + SETTINGS.only(ENCRYPTION_KEYS.env)
    args = parser(prog, __doc__ or "", schema).parse_args(argv)
    settings = load(args)
    if settings is None:
        return 2
    db = Database(make_engine(settings.database_url), Cipher(settings.encryption_keys))
    try:
        migrate.upgrade(db.engine)
        result = rotate(db)
    except ConfigError as exc:
        return failed("aibridge rotate-keys", exc)
    finally:
        db.engine.dispose()
    print(
        f"re-encrypted {result.rewritten} value(s); {result.already_current} already under "
        f"key {db.cipher.primary_id}",
        file=sys.stderr,
    )
    for failure in result.failed:
        print(f"  could not decrypt: {failure}", file=sys.stderr)
    return 1 if result.failed else 0
