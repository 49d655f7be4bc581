"""The Kubernetes API server side: an aiohttp client on lightkube's config and auth, and the
gateways, event recorder, reviews, token and CSR clients behind the cluster ports."""
