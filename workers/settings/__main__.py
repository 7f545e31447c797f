"""``python -m workers.settings``: print the README table, rewrite it, or a role's --help."""

from __future__ import annotations

import sys
from pathlib import Path

from workers.settings.docs import help_text, markdown_table, write_readme
from workers.settings.setting import ALL, ROLES


def main(argv: list[str] | None = None) -> int:
    """``--markdown``: print the README table; ``--readme PATH``: rewrite it; ROLE: --help."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--markdown"]:
        print(markdown_table())
    elif len(args) == 2 and args[0] == "--readme":
        write_readme(Path(args[1]))
    elif len(args) == 1 and args[0] in (*ROLES, ALL):
        print(help_text(args[0]))
    else:
        print(
            f"usage: python -m workers.settings --markdown | --readme PATH | {'|'.join(ROLES)}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
