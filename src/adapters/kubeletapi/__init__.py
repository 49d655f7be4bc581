"""The kubelet HTTPS API: the aiohttp server, TLS and its certificate, authentication, logs,
and the exec/attach/port-forward streams over SPDY/3.1 and WebSocket."""
