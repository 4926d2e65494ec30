"""The web process: webhooks, health, metrics and the admin surface."""
