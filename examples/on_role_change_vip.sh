#!/bin/sh
# pgwarden / Patroni `postgresql.callbacks.on_role_change` example: a keepalived-style virtual IP.
#
# The agent runs callbacks as `<script> <action> <role> <scope>`, e.g. `on_role_change primary demo`.
# This script adds the VIP when this node becomes the primary and removes it otherwise, then sends
# gratuitous ARP so the neighbours learn the new owner at once.
#
#   postgresql:
#     callbacks:
#       on_role_change: /etc/pgwarden/on_role_change_vip.sh
#
# The agent runs as the postgres user: allow exactly these commands with sudo, e.g. in
# /etc/sudoers.d/pgwarden-vip:
#   postgres ALL=(root) NOPASSWD: /usr/sbin/ip addr add 10.0.0.100/24 dev eth0, \
#                                 /usr/sbin/ip addr del 10.0.0.100/24 dev eth0, \
#                                 /usr/sbin/arping -c 3 -U -I eth0 10.0.0.100
#
# Caveat (why vip-manager or `pgwarden route --etcd2-mirror` is preferred): a callback runs only while
# the agent runs. If the host loses its agent but keeps its network, nothing removes the VIP here;
# vip-manager drops it as soon as the leader key stops naming this node.
set -eu

VIP="${PGWARDEN_VIP:-10.0.0.100/24}"
DEV="${PGWARDEN_VIP_DEV:-eth0}"
action="${1:-}"
role="${2:-}"

have_vip() { ip -o addr show dev "$DEV" | grep -q " ${VIP%/*}/"; }

case "$action" in
  on_role_change|on_start|on_restart) ;;
  on_stop) role=stopped ;;
  *) exit 0 ;;
esac

if [ "$role" = "primary" ] || [ "$role" = "master" ]; then
  have_vip || sudo -n ip addr add "$VIP" dev "$DEV"
  sudo -n arping -c 3 -U -I "$DEV" "${VIP%/*}" >/dev/null 2>&1 || true
  logger -t pgwarden-vip "VIP $VIP added on $DEV (role $role)"
else
  if have_vip; then
    sudo -n ip addr del "$VIP" dev "$DEV"
    logger -t pgwarden-vip "VIP $VIP removed from $DEV (role $role)"
  fi
fi
