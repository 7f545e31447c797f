"""Process settings from ``FAILOVER_*`` variables (DESIGN §7), all declared in one table.

- :mod:`.table`: every variable's type, default, bounds, unit, help and the roles reading it
  (rows in :mod:`.redis_rows`, :mod:`.coordinator_rows`, :mod:`.edge_rows`; row type,
  roles and checks in :mod:`.setting`);
- :mod:`.rules`: the rules relating several variables;
- :mod:`.loader`: :class:`Settings` and :func:`load_settings` (one role's variables only),
  each value parsed by :mod:`.parsers`;
- :mod:`.docs`: :func:`help_text` for a process's ``--help`` and :func:`markdown_table` for
  the README.
"""

from __future__ import annotations

from workers.settings.docs import help_text, markdown_table
from workers.settings.loader import (
    DEFAULT_REDIS_URL,
    DEFAULTS,
    ExecutorSettings,
    KafkaSettings,
    Settings,
    load_settings,
    read_setting,
)
from workers.settings.parsers import ProbeTarget
from workers.settings.rules import lease_timing_problems
from workers.settings.setting import ALL, MAX_DURATION_MS, MIN_REELECT_MS, PREFIX, ROLES

__all__ = [
    "ALL",
    "DEFAULTS",
    "DEFAULT_REDIS_URL",
    "MAX_DURATION_MS",
    "MIN_REELECT_MS",
    "PREFIX",
    "ROLES",
    "ExecutorSettings",
    "KafkaSettings",
    "ProbeTarget",
    "Settings",
    "help_text",
    "lease_timing_problems",
    "load_settings",
    "markdown_table",
    "read_setting",
]
