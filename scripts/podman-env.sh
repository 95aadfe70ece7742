# Sourced before running podman: podman's default runtime (crun) fails on hosts with hybrid
# cgroups, and its default ulimits can exceed the host's hard limits. Writes a containers.conf
# that uses runc, this shell's hard limits and netavark (whose aardvark-dns resolves container
# names and aliases on a network), unless CONTAINERS_CONF is already set.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  CONTAINERS_CONF="${TMPDIR:-/tmp}/canopy-containers.conf"
  nofile="$(ulimit -Hn)"
  [ "$nofile" = unlimited ] && nofile=1048576
  cat > "$CONTAINERS_CONF" <<CONF
[engine]
runtime = "runc"
[network]
network_backend = "netavark"
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
CONF
  export CONTAINERS_CONF
fi
