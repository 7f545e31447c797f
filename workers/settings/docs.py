"""Documentation generated from the settings table: ``--help`` blocks and the README table.

The README's configuration table sits between :data:`START` and :data:`END`; regenerate it
with ``python -m workers.settings --readme README.md`` (a test fails when it is stale).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from workers.settings.setting import HOUR_MS, ROLES, Derived, Setting, check_role
from workers.settings.table import TABLE


def _plain(text: str) -> str:
    return text.replace("`", "").strip()


def _shown_default(row: Setting) -> str:
    value = row.default
    if isinstance(value, Derived):
        return value.text
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if value in ("", ()):
        return "—"
    if isinstance(value, str):
        return f"`{value}`"
    if row.unit == "ms" and value and value % HOUR_MS == 0:  # 86400000 is easier read as 24 h
        return f"{value} ({value // HOUR_MS} h)"
    return str(value)


def _bounds(row: Setting) -> str:
    if row.kind == "int":
        return f"{row.minimum}..{row.maximum}" + (f" {row.unit}" if row.unit else "")
    if row.kind == "choice":
        return ", ".join(f"`{c}`" for c in row.choices)
    if row.kind == "bool":
        return "`true` / `false`"
    if row.kind == "fraction":
        return "0..1"
    return ""


def _required_by(row: Setting) -> list[str]:
    return [r for r in ROLES if r in row.required]


def _roles(row: Setting) -> str:
    return "all" if row.roles.issuperset(ROLES) else ", ".join(r for r in ROLES if r in row.roles)


def help_text(role: str) -> str:
    """The block a process of ``role`` prints for ``--help``: each variable it reads."""
    check_role(role)
    lines = [f"Environment variables read by the {role} (blank means unset):"]
    for row in TABLE:
        if not row.reads(role):
            continue
        facts = ["required" if row.requires(role) else f"default {_plain(_shown_default(row))}"]
        if _bounds(row):
            facts.append(_plain(_bounds(row)))
        lines.append(f"  {row.name}  ({'; '.join(facts)})")
        lines += textwrap.wrap(
            _plain(row.help), width=92, initial_indent=" " * 6, subsequent_indent=" " * 6
        )
    return "\n".join(lines)


def markdown_table() -> str:
    """The README configuration table: every variable, generated from the table."""
    lines = ["| variable | meaning | default | bounds | read by |", "|---|---|---|---|---|"]
    for row in TABLE:
        required = _required_by(row)
        default = f"**required** by {', '.join(required)}" if required else _shown_default(row)
        lines.append(
            f"| `{row.name}` | {row.help} | {default} | {_bounds(row) or '—'} | {_roles(row)} |"
        )
    return "\n".join(lines)


START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def readme_table(text: str) -> str:
    """The part of ``text`` (a README) between the settings-table markers."""
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme(path: Path) -> None:
    """Rewrite the table between the markers of the README at ``path``."""
    text = path.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{START}\n{markdown_table()}\n{END}{tail}")
