# syntax=docker/dockerfile:1
# One image for every stepstream service; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STEPSTREAM_SCENARIOS_DIR=/app/scenarios

WORKDIR /app

COPY pyproject.toml README.md gunicorn.conf.py ./
COPY tasks ./tasks
COPY web ./web
COPY worker ./worker
RUN pip install . \
    && useradd --system --create-home --uid 10001 --user-group stepstream

COPY scenarios ./scenarios

USER stepstream

EXPOSE 8000 5555

# gevent workers: thousands of live WebSockets and SSE streams per process (see
# gunicorn.conf.py); WEB_CONCURRENCY sets the number of processes.
CMD ["gunicorn", "--config", "gunicorn.conf.py", "--bind", "0.0.0.0:8000", \
     "web:create_app()"]
