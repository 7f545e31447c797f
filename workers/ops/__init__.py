"""Operator tooling: failoverctl commands, status, dead letters, replay and the demo."""
