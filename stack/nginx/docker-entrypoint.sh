#!/bin/sh
# Render the server block from its template (substituting API_UPSTREAM only), check the whole
# configuration, then run the command (by default nginx in the foreground, as PID 1).
set -eu

API_UPSTREAM="${API_UPSTREAM:-api:8000}"
case "$API_UPSTREAM" in
    "" | *[!A-Za-z0-9._:\[\]-]*)
        echo "nginx entrypoint: API_UPSTREAM must be host:port (letters, digits, . _ - : [ ] only), got '$API_UPSTREAM'" >&2
        exit 64
        ;;
esac
export API_UPSTREAM

envsubst '${API_UPSTREAM}' < /etc/nginx/templates/default.conf.template > /etc/nginx/conf.d/default.conf
echo "nginx entrypoint: proxying to http://$API_UPSTREAM" >&2

if [ "$#" -eq 0 ]; then
    set -- nginx -g 'daemon off;'
fi
if [ "$1" = nginx ]; then
    nginx -t
fi
exec "$@"
