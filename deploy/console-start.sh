#!/bin/sh
# The console container's entry: migrate, static files, accounts and instances configured as
# code (idempotent), then the ASGI server. Behind nginx: client addresses from X-Forwarded-For, set
# by nginx and believed only from CONSOLE_TRUSTED_PROXIES (the stack's nginx).
set -eu
python manage.py migrate --noinput
# After an upgrade the history's durations are read here, not by /metrics's first scrape; a failure
# here costs that scrape the read, never the console its start.
python manage.py keep_durations || echo "keep_durations failed: /metrics reads the history at its first scrape"
python manage.py collectstatic --noinput -v 0
if [ -n "${CONSOLE_ADMIN_PASSWORD:-}" ]; then
  python manage.py ensure_user admin --role admin --password-env CONSOLE_ADMIN_PASSWORD
fi
if [ -n "${CONSOLE_OPERATOR_PASSWORD:-}" ]; then
  python manage.py ensure_user operator --role operator --password-env CONSOLE_OPERATOR_PASSWORD
fi
# CONSOLE_INSTANCES: space-separated "name,container,url,group" entries on host $CONSOLE_HOST_NAME.
# The image runs its server under inference.supervisor: restarts replace the model process only,
# unless INFERENCE_RESTART_IN_PLACE=0; with INFERENCE_HANDOVER=1 they are handovers (a new model
# process serves before the old one drains; it needs room for the weights twice on the GPU).
in_place=""
if [ "${INFERENCE_RESTART_IN_PLACE:-1}" = 1 ]; then in_place="--restart-in-place"; fi
if [ "${INFERENCE_HANDOVER:-0}" = 1 ]; then in_place="$in_place --handover"; fi
for entry in ${CONSOLE_INSTANCES:-}; do
  IFS=, read -r name container url group <<EOF_ENTRY
$entry
EOF_ENTRY
  python manage.py register_instance "$name" --host "$CONSOLE_HOST_NAME" --docker-url "$CONSOLE_DOCKER_URL" \
    --container "$container" --image "${INFERENCE_IMAGE:-}" --url "$url" --group "$group" \
    --admin-token-env INFERENCE_ADMIN_TOKEN $in_place
done
exec uvicorn console.asgi:application --host "${CONSOLE_BIND:-0.0.0.0}" --port "${CONSOLE_PORT:-8000}" \
  --proxy-headers --forwarded-allow-ips "${CONSOLE_TRUSTED_PROXIES:-127.0.0.1}" --log-level warning
