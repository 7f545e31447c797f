"""The failover policy: pure (imports schemas only), time is an argument."""
