"""The project's error hierarchy, kept in the lowest package so every layer can raise and catch it.

Modelled on dramatiq's ``errors.py`` and aiokafka's ``retriable`` flag: callers decide whether
to try again by reading ``retriable``, never by matching messages. Lock contention and a fenced
commit are normal return values, not exceptions.
"""

from __future__ import annotations


class FailoverError(Exception):
    """Base class of every error this project raises on purpose."""

    retriable: bool = False


class ConfigError(FailoverError):
    """A setting or command-line value is invalid; the message names it and the rule."""


class DecodeError(FailoverError):
    """A stream entry is not a valid event; ``reason`` is the human-readable cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RedisUnavailable(FailoverError):
    """Redis did not answer within the retry deadline; trying again later may succeed."""

    retriable = True


class RedisRefused(FailoverError):
    """Redis answered with an error that trying again will not fix (password, ACL, a bug)."""


class GroupMissing(RedisRefused):
    """A consumer group (or the stream holding it) does not exist: Redis said NOGROUP."""


class ScriptError(FailoverError):
    """A Lua script answered something its contract does not allow (a bug, not an outage)."""


class KafkaUnavailable(FailoverError):
    """The Kafka brokers did not answer (or refused us) in time; trying later may succeed."""

    retriable = True
