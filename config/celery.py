import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("mpi_trials")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("ingest"), Queue("recon"), Queue("export"))
app.autodiscover_tasks()
