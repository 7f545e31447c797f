"""The health prober: probes region endpoints and publishes health events."""
