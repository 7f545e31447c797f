"""The one table of ``FAILOVER_*`` settings: each variable's type, default, bounds, unit, help
and the roles (processes) that read it.

The loader (:mod:`workers.settings.loader`), every process's ``--help`` and the README
configuration table (:mod:`workers.settings.docs`) are all produced from :data:`TABLE`; a
default or a bound is written in one row and nowhere else, derived defaults included. The
rows live by capability in :mod:`.redis_rows`, :mod:`.coordinator_rows` and
:mod:`.edge_rows` (built with :mod:`.setting`); this module puts them in one order. The
rules that relate several variables are in :mod:`workers.settings.rules`.
"""

from __future__ import annotations

from typing import Any

from workers.settings.coordinator_rows import CORE_ROWS, INPUT_LIMIT_ROWS, REPLICATION_ROWS
from workers.settings.edge_rows import EXECUTOR_ROWS, KAFKA_ROWS, LAG_ROWS, PROBE_ROWS
from workers.settings.redis_rows import ADDRESS_ROWS, SENTINEL_ROWS, TLS_ROWS
from workers.settings.setting import Derived, Setting

# The README's order: the blocks interleave because related rows sit together there.
TABLE: tuple[Setting, ...] = (
    *ADDRESS_ROWS,
    *CORE_ROWS,
    *TLS_ROWS,
    *INPUT_LIMIT_ROWS,
    *SENTINEL_ROWS,
    *REPLICATION_ROWS,
    *PROBE_ROWS,
    *LAG_ROWS,
    *KAFKA_ROWS,
    *EXECUTOR_ROWS,
)

BY_ENV: dict[str, Setting] = {s.env: s for s in TABLE}


def static_defaults() -> dict[str, Any]:
    """Every variable's default value (derived ones computed from the others' defaults)."""
    plain = {s.env: s.default for s in TABLE if not isinstance(s.default, Derived)}
    derived = {s.env: s.default.compute(plain) for s in TABLE if isinstance(s.default, Derived)}
    return plain | derived
