"""RQ as DeviceVault uses it: job data, meta and results are JSON, never pickle.

RQ's default serializer is pickle, so anyone who can write to Redis could run code on every worker that
loads a job. DeviceVault's jobs carry plain data only (run ids, host names, outbox ids, statuses), and every
place that enqueues, runs or inspects a job (``start_backup``, the storage jobs, the workers and their
scheduler, ``devicevault scheduler`` through rq-scheduler, queue hygiene, ``status``, the portal) uses the
classes of this module, whose default serializer is :data:`SERIALIZER`. A job written with pickle cannot be
loaded by them (the JSON decoder refuses it), so it never runs.

rq-scheduler has no ``serializer`` argument; it takes ``job_class`` and ``queue_class``, which is why the
serializer is the default of these classes rather than an argument everyone has to remember.
"""

from __future__ import annotations

from rq import Queue as _Queue
from rq import Worker as _Worker
from rq.job import Job as _Job
from rq.serializers import JSONSerializer

#: the one serializer of DeviceVault's RQ jobs
SERIALIZER = JSONSerializer


class Job(_Job):
    """An RQ job stored as JSON."""

    def __init__(self, id: str | None = None, connection=None, serializer=None):
        super().__init__(id, connection=connection, serializer=serializer or SERIALIZER)


class Queue(_Queue):
    """An RQ queue whose jobs are :class:`Job` (JSON)."""

    job_class = Job

    def __init__(self, name: str = "default", connection=None, *args, serializer=None, **kwargs):
        kwargs.setdefault("job_class", Job)
        super().__init__(name, connection, *args, serializer=serializer or SERIALIZER, **kwargs)


class Worker(_Worker):
    """An RQ worker (and, with ``Worker.all``, the workers found in Redis) reading :class:`Job` s."""

    job_class = Job
    queue_class = Queue

    def __init__(self, *args, serializer=None, **kwargs):
        super().__init__(*args, serializer=serializer or SERIALIZER, **kwargs)

    @classmethod
    def all(cls, connection=None, job_class=None, queue_class=None, queue=None, serializer=None):
        return super().all(connection=connection, job_class=job_class or Job, queue_class=queue_class or Queue,
                           queue=queue, serializer=serializer or SERIALIZER)


def fetch_job(job_id: str, connection) -> Job:
    """A job by id (``rq.exceptions.NoSuchJobError`` when it is gone)."""
    return Job.fetch(job_id, connection=connection)
