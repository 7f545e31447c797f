"""Wire types of the coordinator and their stream-entry codec (imports nothing else here)."""
