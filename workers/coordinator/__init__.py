"""The coordinator: election, the leader's pipeline and the process that runs them."""
