# The chaos cluster's network (sourced by deploy/chaos/run.sh): each broker in a network
# namespace of its own, so that one of them can be cut off from the other two while every
# client still reaches it.
#
# Why namespaces: there is no iptables here, and on one host's loopback every connection
# goes to and from 127.x addresses of the same namespace, which no route can tell apart.
# In namespaces chaos-k1..3 each broker has one address (10.213.0.2-4 on a veth, eth0
# inside), the other ends joined by the bridge chaos-br0 (10.213.0.1/24) in the root
# namespace, where the clients, the services and the registry run: they reach every
# broker over the bridge, and the brokers reach each other the same way.
#
# The partition is a routing decision inside the namespaces: `ip route add blackhole
# PEER/32` in the victim's namespace for each of its two peers and in each peer's for the
# victim. Its packets to them and theirs to it are dropped (a new connection fails at
# once with EINVAL, an open one hears nothing and times out); traffic with the root
# namespace goes on. The heal deletes the routes. Needs root and iproute2.

CHAOS_NET=10.213.0
CHAOS_BRIDGE=chaos-br0
chaos_addr() { echo "$CHAOS_NET.$(($1 + 1))"; }

# netns_up: the bridge and the three namespaces. Namespaces no process runs in are left
# over from a run that did not end cleanly: they are made again from nothing. With a
# broker still running in them (CHAOS_KEEP=1), only a partition left over is healed.
netns_up() {
  local n busy=0
  for n in 1 2 3; do
    [[ -n "$(ip netns pids "chaos-k$n" 2>/dev/null)" ]] && busy=1
  done
  if ((busy)); then
    netns_heal
    return 0
  fi
  netns_down
  ip link add "$CHAOS_BRIDGE" type bridge
  ip addr add "$CHAOS_NET.1/24" dev "$CHAOS_BRIDGE"
  ip link set "$CHAOS_BRIDGE" up
  for n in 1 2 3; do
    ip netns add "chaos-k$n"
    ip link add "chaos-v$n" type veth peer name eth0 netns "chaos-k$n"
    ip link set "chaos-v$n" master "$CHAOS_BRIDGE" up
    ip -n "chaos-k$n" addr add "$(chaos_addr "$n")/24" dev eth0
    ip -n "chaos-k$n" link set eth0 up
    ip -n "chaos-k$n" link set lo up
  done
}

# netns_down: removes the namespaces and the bridge (the veths go with them).
netns_down() {
  local n
  for n in 1 2 3; do
    ip netns del "chaos-k$n" 2>/dev/null || true
    ip link del "chaos-v$n" 2>/dev/null || true
  done
  ip link del "$CHAOS_BRIDGE" 2>/dev/null || true
}

# netns_partition N: cuts node N off from the two others (both directions).
netns_partition() {
  local victim="$1" n
  for n in 1 2 3; do
    ((n == victim)) && continue
    ip -n "chaos-k$victim" route add blackhole "$(chaos_addr "$n")/32"
    ip -n "chaos-k$n" route add blackhole "$(chaos_addr "$victim")/32"
  done
}

# netns_heal: deletes every blackhole route in the namespaces.
netns_heal() {
  local n route
  for n in 1 2 3; do
    while read -r route; do
      [[ -n "$route" ]] && ip -n "chaos-k$n" route del $route
    done < <(ip -n "chaos-k$n" route show type blackhole 2>/dev/null)
  done
}
