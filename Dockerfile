# syntax=docker/dockerfile:1
# One image for every stepstream service; docker-compose.yml picks the command.
#
# The project goes in as a wheel, with its `server` extra (gunicorn, gevent, Flower) and
# every dependency pinned by constraints.txt (`make lock` rewrites it). The sources are
# not in the final image: /app holds only gunicorn.conf.py and the example scenarios.
# tests/packaging/test_wheel.py builds the wheel from what this stage copies, installs
# it the same two ways into a fresh venv, and runs every command of the image and of
# docker-compose.yml from outside the checkout.

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tasks ./tasks
COPY client ./client
COPY web ./web
COPY worker ./worker
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /dist .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STEPSTREAM_SCENARIOS_DIR=/app/scenarios \
    STEPSTREAM_BIND=0.0.0.0:8000

# The pinned dependencies first, in a layer of their own: rebuilt only when the lock
# changes. Then the wheel, from no index: it must find every requirement pinned above.
COPY constraints.txt /tmp/constraints.txt
RUN pip install --requirement /tmp/constraints.txt
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-index --find-links /dist --constraint /tmp/constraints.txt \
        "stepstream[server]" \
    && useradd --system --create-home --uid 10001 --user-group stepstream

WORKDIR /app
COPY gunicorn.conf.py ./
COPY scenarios ./scenarios

USER stepstream

EXPOSE 8000 5555

# gevent workers: thousands of live WebSockets and SSE streams per process (see
# gunicorn.conf.py), on STEPSTREAM_BIND; WEB_CONCURRENCY sets the number of processes.
CMD ["gunicorn", "--config", "gunicorn.conf.py", "web:create_app()"]
