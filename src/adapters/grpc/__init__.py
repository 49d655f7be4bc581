"""The provider protocol over gRPC: the client adapter (a Provider for vkubelet), the server
SDK for providers written in Python, the JSON conversions and the status-code mapping."""
