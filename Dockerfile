# Console image: web (uvicorn), worker and beat share it.
#   docker build -t instance-console .
# Offline builds pass a local Debian base (with python3-venv) and a wheelhouse:
#   pip download -r requirements.txt -d wheels/ && docker build --build-arg BASE_IMAGE=... --build-arg WHEELHOUSE=wheels .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG WHEELHOUSE=
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 CONSOLE_VAR_DIR=/var/lib/console
WORKDIR /app
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /app/requirements.txt
COPY ${WHEELHOUSE:-requirements.txt} /tmp/wheels/
RUN if ls /tmp/wheels/*.whl >/dev/null 2>&1; then \
        pip install --no-index --find-links /tmp/wheels -r /app/requirements.txt; \
    else \
        pip install -r /app/requirements.txt; \
    fi && rm -rf /tmp/wheels
COPY manage.py /app/
COPY console /app/console
COPY templates /app/templates
COPY static /app/static
COPY locale /app/locale
COPY deploy /app/deploy
RUN useradd --system --uid 10002 --home /app console && mkdir -p /var/lib/console && chown console /var/lib/console
USER console
EXPOSE 8000
CMD ["sh", "deploy/console-start.sh"]
