#!/usr/bin/env bash
# Stand up an agent and a relay on this machine, on loopback, with fresh
# certificates: the steps of deploy/README.md ("Try it on one machine"),
# runnable. Usage: deploy/quickstart.sh [DIR]   (Ctrl-C stops both nodes)
# Needs ponte-agent and ponte-relay on PATH. Ports can be moved with
# QUIC_PORT, HTTP_PORT, AGENT_MGMT_PORT, RELAY_MGMT_PORT.
set -euo pipefail
DIR="${1:-$(mktemp -d /tmp/ponte-quickstart.XXXXXX)}"
QUIC_PORT="${QUIC_PORT:-17443}"
HTTP_PORT="${HTTP_PORT:-18080}"
AGENT_MGMT_PORT="${AGENT_MGMT_PORT:-19090}"
RELAY_MGMT_PORT="${RELAY_MGMT_PORT:-19091}"
mkdir -p "$DIR"
cd "$DIR"

# 1. The deployment's CA and one certificate per node.
ponte-agent pki init  --dir pki
ponte-agent pki issue --dir pki --site master
ponte-agent pki issue --dir pki --site carabinieri --dns localhost --ip 127.0.0.1

# 2. The relay's config (see deploy/examples/relay-carabinieri.toml for every key).
cat > relay.toml <<TOML
[relay]
site = "carabinieri"
quic_listen = "127.0.0.1:$QUIC_PORT"
http_listen = "127.0.0.1:$HTTP_PORT"
# A loopback trial without accounts; a relay in service has [[viewer]] accounts
# and refuses to start without them (deploy/README.md, "Viewer accounts").
allow_anonymous = true
[tls]
ca = "pki/ca.pem"
cert = "pki/carabinieri.pem"
key = "pki/carabinieri.key"
[audit]
path = "relay-audit.log"
[management]
listen = "127.0.0.1:$RELAY_MGMT_PORT"
TOML

# 3. The agent's config: one synthetic test camera, granted to the site and
#    kept streaming (always_on) so the link carries video at once.
cat > agent.toml <<TOML
[agent]
id = "master"
[tls]
ca = "pki/ca.pem"
cert = "pki/master.pem"
key = "pki/master.key"
[audit]
path = "agent-audit.log"
[management]
listen = "127.0.0.1:$AGENT_MGMT_PORT"
[[relay]]
site = "carabinieri"
addr = "127.0.0.1:$QUIC_PORT"
[[site]]
id = "carabinieri"
allow = ["*"]
always_on = ["*"]
[[device]]
id = "test-pattern"
name = "test pattern"
zone = "master"
type = "fixed"
source = "synthetic"
TOML

# 4. Start both nodes (systemd does this in production: deploy/systemd/).
ponte-relay run --config relay.toml & RELAY=$!
ponte-agent run --config agent.toml & AGENT=$!
trap 'kill $AGENT $RELAY 2>/dev/null; wait' EXIT INT TERM

# 5. Check it: the relay's status exits 0 once the link is up.
for _ in $(seq 1 60); do
    if ponte-relay status --url "http://127.0.0.1:$RELAY_MGMT_PORT" >/dev/null 2>&1; then
        ponte-relay status --url "http://127.0.0.1:$RELAY_MGMT_PORT"
        echo "quickstart: relay status OK; viewer page at http://127.0.0.1:$HTTP_PORT/ (files in $DIR)"
        wait
        exit 0
    fi
    sleep 0.5
done
echo "quickstart: the relay did not report OK within 30 s" >&2
ponte-relay status --url "http://127.0.0.1:$RELAY_MGMT_PORT" || true
exit 1
