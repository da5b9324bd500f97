"""Infrastructure: local S3 server and local Ray cluster helpers, cluster configuration, cost planning."""
