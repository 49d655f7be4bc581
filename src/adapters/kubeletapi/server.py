"""The kubelet HTTPS API served with aiohttp: the read-only routes.

Routes (upstream's ``node/api/server.go`` plus ``/healthz``, which upstream lacks):

========================================  =====================================================
``GET /pods``                             the API server's pods bound to this node (v1 PodList)
``GET /runningpods/``, ``/runningpods``   the provider's pods (v1 PodList)
``GET /stats/summary[/]``                 kubelet stats/v1alpha1 Summary JSON
``GET /metrics/resource[/]``              Prometheus text exposition 0.0.4
``GET /healthz``                          ``ok``
``GET|POST /exec/{ns}/{pod}/{c}``         exec over SPDY or WebSocket (``.remotecommand``)
``GET|POST /attach/{ns}/{pod}/{c}``       attach, likewise; both also as ``/{ns}/{pod}/{uid}/{c}``
``GET|POST /portForward/{ns}/{pod}``      port-forward (``.portforward``), also with ``/{uid}``
``GET /containerLogs/{ns}/{pod}/{c}``     container log stream (see ``.logs``)
========================================  =====================================================

Both slash variants are served directly (upstream answered one with a 301 redirect). Domain
errors are translated here, at the edge: NotFound 404, InvalidInput 400, NotSupported 501, each
with its message as a plain-text body; anything else is logged with its traceback and answers
500 with a short message that reveals no internals. Unknown paths answer 404.

Authentication, authorization and tracing are aiohttp middlewares supplied by the caller
(``create_app(middlewares=...)``); they run outside the error translation, in the order given.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Iterator, Sequence

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from vkubelet.adapters.kubeletapi.logs import serve_container_logs
from vkubelet.adapters.kubeletapi.portforward import serve_port_forward
from vkubelet.adapters.kubeletapi.remotecommand import (
    STREAM_TIMEOUTS_KEY,
    StreamTimeouts,
    serve_remote_command,
)
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.domain.errors import InvalidInput, NotFound, NotSupported
from vkubelet.domain.provider import MetricFamily

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


API_KEY: web.AppKey[KubeletApi] = web.AppKey("kubelet_api", KubeletApi)


# -- Prometheus rendering -------------------------------------------------------------------------
class _FamiliesCollector(Collector):
    """Hands a fixed list of metric families to prometheus-client's text renderer."""

    def __init__(self, families: Sequence[MetricFamily]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield _to_prometheus(family)


def _to_prometheus(family: MetricFamily) -> Metric:
    metric: Metric
    if family.type == "counter":
        metric = CounterMetricFamily(family.name, family.help)
        sample_name = metric.name + "_total"  # the family name loses "_total"; samples keep it
    elif family.type == "gauge":
        metric = GaugeMetricFamily(family.name, family.help)
        sample_name = family.name
    else:
        metric = Metric(family.name, family.help, "unknown")
        sample_name = family.name
    # Samples are appended directly because their label sets may differ within a family,
    # which the add_metric(labels=[...]) helpers cannot express.
    for sample in family.samples:
        timestamp = sample.timestamp_ms / 1000 if sample.timestamp_ms is not None else None
        metric.samples.append(Sample(sample_name, dict(sample.labels), float(sample.value), timestamp))
    return metric


def render_prometheus_text(families: Sequence[MetricFamily]) -> bytes:
    """Render ``families`` in the Prometheus text exposition format 0.0.4."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FamiliesCollector(families))
    return generate_latest(registry)


# -- handlers -------------------------------------------------------------------------------------
async def _pods(request: web.Request) -> web.StreamResponse:
    return web.json_response(await request.app[API_KEY].pods())


async def _running_pods(request: web.Request) -> web.StreamResponse:
    return web.json_response(await request.app[API_KEY].running_pods())


async def _stats_summary(request: web.Request) -> web.StreamResponse:
    return web.json_response(await request.app[API_KEY].stats_summary())


async def _metrics_resource(request: web.Request) -> web.StreamResponse:
    families = await request.app[API_KEY].metrics_resource()
    return web.Response(
        body=render_prometheus_text(families), headers={hdrs.CONTENT_TYPE: PROMETHEUS_CONTENT_TYPE}
    )


async def _container_logs(request: web.Request) -> web.StreamResponse:
    return await serve_container_logs(request, request.app[API_KEY])


async def _exec(request: web.Request) -> web.StreamResponse:
    return await serve_remote_command(
        request, request.app[API_KEY], request.app[STREAM_TIMEOUTS_KEY], attach=False
    )


async def _attach(request: web.Request) -> web.StreamResponse:
    return await serve_remote_command(
        request, request.app[API_KEY], request.app[STREAM_TIMEOUTS_KEY], attach=True
    )


async def _port_forward(request: web.Request) -> web.StreamResponse:
    return await serve_port_forward(request, request.app[API_KEY], request.app[STREAM_TIMEOUTS_KEY])


async def _healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


# -- error translation ----------------------------------------------------------------------------
def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message.rstrip("\n") + "\n")


@web.middleware
async def translate_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors to status codes; hide unexpected failures behind a logged 500."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _text(404, f"404 request not found: {request.path}")
    except web.HTTPException:
        raise  # 405 and the like, already an HTTP answer
    except NotFound as exc:
        return _text(404, str(exc) or "not found")
    except InvalidInput as exc:
        return _text(400, str(exc) or "invalid request")
    except NotSupported as exc:
        return _text(501, str(exc) or "not supported by this provider")
    except Exception:
        log.exception("kubelet API: %s %s failed", request.method, request.path)
        return _text(500, f"internal error while serving {request.path}; see the virtual-kubelet log")


def create_app(
    api: KubeletApi,
    *,
    middlewares: Iterable[Middleware] = (),
    stream_timeouts: StreamTimeouts | None = None,
) -> web.Application:
    """The aiohttp application. ``middlewares`` (authentication, tracing, ...) run first, in order."""
    chain: list[Middleware] = list(middlewares)
    chain.append(translate_errors)
    app = web.Application(middlewares=chain)
    app[API_KEY] = api
    router = app.router
    router.add_get("/pods", _pods)
    router.add_get("/runningpods/", _running_pods)
    router.add_get("/runningpods", _running_pods)
    router.add_get("/stats/summary", _stats_summary)
    router.add_get("/stats/summary/", _stats_summary)
    router.add_get("/metrics/resource", _metrics_resource)
    router.add_get("/metrics/resource/", _metrics_resource)
    router.add_get("/healthz", _healthz)
    router.add_get("/containerLogs/{namespace}/{pod}/{container}", _container_logs)
    # exec/attach/portForward: GET (WebSocket) and POST (SPDY), with or without the pod UID.
    app[STREAM_TIMEOUTS_KEY] = stream_timeouts or StreamTimeouts()
    for method in (hdrs.METH_GET, hdrs.METH_POST):
        for prefix, handler in (("/exec", _exec), ("/attach", _attach)):
            router.add_route(method, prefix + "/{namespace}/{pod}/{container}", handler)
            router.add_route(method, prefix + "/{namespace}/{pod}/{uid}/{container}", handler)
        router.add_route(method, "/portForward/{namespace}/{pod}", _port_forward)
        router.add_route(method, "/portForward/{namespace}/{pod}/{uid}", _port_forward)
    return app


# -- the server -----------------------------------------------------------------------------------
class KubeletServer:
    """Serves :func:`create_app` on one address. ``listen_host=""`` binds every interface;
    ``listen_port=0`` picks a free port (read it from :attr:`port` after :meth:`start`; give an
    explicit host with port 0, since each address family of "every interface" may get its own
    ephemeral port). ``ssl_context=None`` serves plain HTTP, which only tests and a
    TLS-terminating proxy want."""

    def __init__(
        self,
        api: KubeletApi,
        *,
        listen_host: str,
        listen_port: int,
        ssl_context: ssl.SSLContext | None,
        middlewares: Iterable[Middleware] = (),
        stream_timeouts: StreamTimeouts | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self._app = create_app(api, middlewares=middlewares, stream_timeouts=stream_timeouts)
        self._host = listen_host
        self._requested_port = listen_port
        self._ssl_context = ssl_context
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def port(self) -> int:
        """The bound port; only valid between :meth:`start` and :meth:`stop`."""
        if self._port is None:
            raise RuntimeError("the kubelet API server is not started")
        return self._port

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the kubelet API server is already started")
        if self._ssl_context is None:
            log.warning("kubelet API: serving plain HTTP (no TLS context given)")
        # handler_cancellation: a client that goes away cancels its handler, which is how a
        # follow of /containerLogs (or any stream) learns to close the provider's stream.
        runner = web.AppRunner(self._app, shutdown_timeout=self._shutdown_timeout, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, self._host or None, self._requested_port, ssl_context=self._ssl_context)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            # aiohttp's own wording names neither the listener nor how to choose another port.
            raise OSError(
                error.errno,
                f"kubelet API: cannot listen on {self._host or '*'}:{self._requested_port}: "
                f"{error.strerror or error} (choose another with --listen-address or KUBELET_PORT)",
            ) from error
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info(
            "kubelet API: listening on %s:%d (%s)",
            self._host or "*",
            self._port,
            "https" if self._ssl_context else "http",
        )

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to ``shutdown_timeout``), close."""
        runner, self._runner = self._runner, None
        self._port = None
        if runner is not None:
            await runner.cleanup()
