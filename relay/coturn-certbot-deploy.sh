#!/bin/sh
# certbot deploy hook (as Jitsi Meet's coturn-certbot-deploy.sh): after each renewal, copy the
# relay's certificate to where Prosody and coturn read it, readable by their users only, and reload.
# certbot sets RENEWED_LINEAGE to /etc/letsencrypt/live/HOST.
set -eu
host="$(basename "$RENEWED_LINEAGE")"
for service in prosody coturn; do
  dir="/etc/$service/certs"
  user="$service"; [ "$service" = coturn ] && user=turnserver
  mkdir -p "$dir"
  install -m 0644 -o root -g "$user" "$RENEWED_LINEAGE/fullchain.pem" "$dir/$host.crt"
  install -m 0640 -o root -g "$user" "$RENEWED_LINEAGE/privkey.pem" "$dir/$host.key"
done
systemctl reload prosody || echo "emocall-relay: Prosody did not reload its certificate" >&2
# coturn (one process) reloads its certificate on SIGUSR2; a restart would drop every call it relays.
systemctl kill -s SIGUSR2 coturn || echo "emocall-relay: coturn was not told to reload its certificate" >&2
