"""The Kafka edge: the bridge into the Redis streams and the decisions mirror."""
