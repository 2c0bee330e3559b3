"""The Celery application: JSON only, explicit queues and routes, late acks, events on.

``create_app`` builds an app for a settings object and a pool (tests build their own); the
module-level ``app`` is what ``celery -A sale.broker.app`` and ``sale worker`` use. Building the app
reads the pool file but connects to nothing: Celery connects lazily.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue
from sale.broker.pool import CONTROL_QUEUE, Pool, load_pool
from sale.broker.settings import Settings, get_settings

CONTROL_TASKS = (
    "sale.job",
    "sale.judge",
    "sale.score",
    "sale.shortcut",
    "sale.update",
    "sale.on_error",
)
MODEL_TASKS = ("sale.bid", "sale.jury")
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
REDIS_TRANSPORT = "sale.broker.transport:Transport"
PUBLISH_RETRY_POLICY = {"max_retries": 30, "interval_start": 0.5, "interval_step": 1.0,
                        "interval_max": 4.0}  # fmt: skip


def create_app(settings: Settings | None = None, pool: Pool | None = None) -> Celery:
    """A configured Celery app for ``settings`` and ``pool``."""
    settings = settings or get_settings()
    pool = pool or load_pool(settings.effective_pool_file)
    broker = settings.broker_url or DEFAULT_BROKER
    app = Celery("sale", broker=broker, backend=settings.effective_result_backend or broker)
    annotations = {
        name: {
            "soft_time_limit": settings.control_soft_time_limit_s,
            "time_limit": settings.control_time_limit_s,
        }
        for name in CONTROL_TASKS
    }
    for name in MODEL_TASKS:
        annotations[name] = {
            "soft_time_limit": settings.call_soft_time_limit_s,
            "time_limit": settings.call_time_limit_s,
        }
    annotations["sale.execute"] = {
        "soft_time_limit": settings.execute_soft_time_limit_s,
        "time_limit": settings.execute_time_limit_s,
    }
    transport = {"visibility_timeout": settings.visibility_timeout_s}
    app.conf.update(
        include=["sale.workers.tasks", "sale.broker.signals"],
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # The user's own queues too: tasks chained after a job are sent from sale's workers.
        task_queues=[Queue(q, routing_key=q) for q in pool.queues + settings.extra_queues],
        task_default_queue=CONTROL_QUEUE,
        task_create_missing_queues=False,
        task_routes={name: {"queue": CONTROL_QUEUE} for name in CONTROL_TASKS},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_allow_error_cb_on_chord_header=True,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        # kombu's Redis transport, surviving a lost Redis (broker/transport.py).
        broker_transport=REDIS_TRANSPORT if broker.startswith("redis://") else None,
        # A stage whose work is stored keeps sending its next stage through a broker outage of
        # a minute or two (backoff 0.5 s, +1 s a try, at most 4 s: ~110 s over 30 tries).
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        task_annotations=annotations,
        # Leases, the watchdog and the redelivery cap (broker/leases.py).
        sale_lease_ttl_s=settings.lease_ttl_s,
        sale_watchdog_interval_s=settings.watchdog_interval_s,
        sale_redelivery_cap=settings.redelivery_cap,
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    return app


app = create_app()
