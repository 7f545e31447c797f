"""The processes and domain logic: settings, election, policy, coordinator, prober, CLI."""
