"""Ingress: things arrive (webhooks now, pollers later) and become events."""
