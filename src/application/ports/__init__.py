"""Ports: the Protocols the application depends on. Adapters implement them."""
