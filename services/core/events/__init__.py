"""Domain events after they commit: the relay that places them in the feed and
publishes them to NATS JetStream, and the feed's gRPC service. Knows no module."""
