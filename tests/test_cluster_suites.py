"""The lease, elector and commit suites again, on a real Redis Cluster of three primaries.

Every test of ``tests/test_lease.py``, ``tests/test_elector.py`` and ``tests/test_commit.py``
is collected here a second time with ``redis_server`` (and so ``redis_client``) replaced
by an entry node of the session cluster that does NOT own the test's hash-tagged
namespace: each client first meets a ``MOVED`` and must follow it, and every script,
transaction and pub/sub message of those suites then runs on the cluster. The originals
run on the single server; together they are the ``single`` / ``cluster`` pair.
"""

from __future__ import annotations

import pytest

from streams.cluster_set import ClusterSet
from tests import test_commit, test_elector, test_lease


class ClusterEntry:
    """What those suites use of a server: its URL (here a cluster node's)."""

    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture
def redis_server(redis_cluster: ClusterSet, namespace: str) -> ClusterEntry:
    """A cluster node that does not own ``namespace``'s slot, in place of the server."""
    return ClusterEntry(redis_cluster.entry_url(namespace))


# Not run twice: 200 rounds of five electors (~40 s) would be most of the suite's time, and
# the cluster adds nothing to them that the other elector tests here do not cover.
_SINGLE_ONLY = frozenset({"test_five_electors_race_for_200_rounds_without_overlap"})

# The suites' tests and module fixtures, as if written here (pytest collects by name).
for _suite in (test_lease, test_elector, test_commit):
    globals().update(
        {
            name: value
            for name, value in vars(_suite).items()
            if (name.startswith("test_") and name not in _SINGLE_ONLY)
            or type(value).__name__ == "FixtureFunctionDefinition"
        }
    )
