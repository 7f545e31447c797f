"""Parsing one ``FAILOVER_*`` value by the kind of its row, with the rule it breaks if bad."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from schemas.errors import ConfigError
from streams.address import redact, validate_url
from workers.settings.setting import PREFIX, Setting

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ProbeTarget(msgspec.Struct, frozen=True):
    """One endpoint the health prober checks for one region."""

    region: str
    url: str


class Invalid(Exception):
    """A value breaks its row's rule; ``shown`` is the value to quote back (None: none)."""

    def __init__(self, rule: str, shown: str | None = None) -> None:
        super().__init__(rule)
        self.rule, self.shown = rule, shown


def _integer(row: Setting, text: str, _: Mapping[str, Any]) -> int:
    what = "a whole number" + (" of milliseconds" if row.unit == "ms" else "")
    if not re.fullmatch(r"[+-]?\d+", text):
        raise Invalid(f"must be {what}", text)
    number = int(text)
    if row.minimum is not None and number < row.minimum:
        raise Invalid(f"must be {what} >= {row.minimum}", text)
    if row.maximum is not None and number > row.maximum:
        raise Invalid(f"must be {what} <= {row.maximum}", text)
    return number


def _text(row: Setting, text: str, _: Mapping[str, Any]) -> str:
    if row.check is not None and not row.check(text):
        raise Invalid(row.rule, text)
    return text


def _boolean(_row: Setting, text: str, _: Mapping[str, Any]) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise Invalid("must be true or false", text)


def _choice(row: Setting, text: str, _: Mapping[str, Any]) -> str:
    # Case does not matter to a person typing `debug` or `JSON`; the choice's own spelling
    # is what the program sees.
    by_case = {choice.casefold(): choice for choice in row.choices}
    if text.casefold() in by_case and text not in row.choices:
        return by_case[text.casefold()]
    if text not in row.choices:
        raise Invalid(f"must be one of {', '.join(row.choices)}", text)
    return text


def _fraction(_row: Setting, text: str, _: Mapping[str, Any]) -> float:
    if not re.fullmatch(r"\d+(\.\d+)?|\.\d+", text) or not 0 <= float(text) <= 1:
        raise Invalid("must be a decimal number from 0 to 1", text)
    return float(text)


def _names(_row: Setting, text: str, _: Mapping[str, Any]) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(","))
    if not all(0 < len(n) <= 256 and not any(c.isspace() for c in n) for n in names):
        raise Invalid("must be comma-separated names without spaces (no empty entries)", text)
    return tuple(dict.fromkeys(names))


def _url(_row: Setting, text: str, _: Mapping[str, Any]) -> str:
    try:
        validate_url(text)
    except ConfigError as exc:  # its message is already redacted; never quote the URL
        raise Invalid(str(exc)) from None
    return text


def _regions(_row: Setting, text: str, _: Mapping[str, Any]) -> tuple[str, ...]:
    regions = tuple(part.strip() for part in text.split(","))
    if not all(_NAME.match(r) for r in regions):
        rule = "each region must be 1-64 letters, digits, '.', '_' or '-' (no empty entries)"
        raise Invalid(rule, text)
    dupes = sorted({r for r in regions if regions.count(r) > 1})
    if dupes:
        raise Invalid(f"regions must be distinct, {', '.join(dupes)} repeated", text)
    return regions


def _targets(_row: Setting, text: str, values: Mapping[str, Any]) -> tuple[ProbeTarget, ...]:
    regions = values["REGIONS"]
    targets = []
    for part in (p.strip() for p in text.split(",")):
        region, sep, url = part.partition("=")
        shown = f"{region}={redact(url)}" if sep else redact(part)
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if not sep or not region or scheme not in ("http", "https", "tcp"):
            rule = "entries must be region=http(s)://... or region=tcp://host:port"
            raise Invalid(rule, shown)
        problem = _target_problem(url)
        if problem:
            raise Invalid(problem, shown)
        if regions and region not in regions:
            rule = f"region {region!r} is not in {PREFIX}REGIONS"
            raise Invalid(rule, shown)
        targets.append(ProbeTarget(region=region, url=url))
    return tuple(targets)


def _target_problem(url: str) -> str | None:
    """Why ``url`` cannot be probed, or None: a target that can never answer must not
    start a prober that reports its region unhealthy every round."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the port must be a number from 1 to 65535"
    if not parts.hostname:
        return "a probe target needs a host"
    if port == 0:
        return "the port must be a number from 1 to 65535"
    if parts.scheme == "tcp":
        if port is None:
            return "a tcp:// target needs a port (tcp://host:port)"
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            return "a tcp:// target is host:port only"
    return None


PARSERS: dict[str, Callable[[Setting, str, Mapping[str, Any]], Any]] = {
    "int": _integer,
    "text": _text,
    "bool": _boolean,
    "choice": _choice,
    "url": _url,
    "regions": _regions,
    "targets": _targets,
    "fraction": _fraction,
    "names": _names,
}
"""The parser of each row kind but ``secret`` (a secret is taken as is)."""


def raw_text(row: Setting, env: Mapping[str, str]) -> str | None:
    """The variable of ``row`` in ``env``, stripped (a secret as is); None when unset or blank."""
    value = env.get(row.name)
    if row.kind == "secret":  # taken as is: a password may start or end with a space
        return value or None
    if value is None or value.strip() == "":
        return None
    return value.strip()
