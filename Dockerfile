# Console image: web (uvicorn), worker and beat share it.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 CONSOLE_VAR_DIR=/var/lib/console
WORKDIR /app
COPY requirements.txt /app/requirements.txt
RUN python3 -m pip install -r /app/requirements.txt
COPY manage.py /app/
COPY console /app/console
COPY templates /app/templates
COPY static /app/static
RUN useradd --system --uid 10002 --home /app console && mkdir -p /var/lib/console && chown console /var/lib/console
USER console
EXPOSE 8000
CMD ["uvicorn", "console.asgi:application", "--host", "0.0.0.0", "--port", "8000"]
