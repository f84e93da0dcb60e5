FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/data/var/numba-cache
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN MPI_VAR_DIR=/tmp/build-var python manage.py collectstatic --noinput
RUN useradd --create-home mpi && mkdir -p /data /audit-checkpoints && chown mpi /data /audit-checkpoints
USER mpi
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000"]
