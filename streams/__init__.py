"""Everything that talks to Redis or Kafka: connection and retry policy, keys, scripts, lease."""
