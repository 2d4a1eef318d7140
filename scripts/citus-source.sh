# Sourced by ./deploycheck and scripts/setup.sh: where Citus cannot be pulled, real Citus is built from its source
# release: the one given ($DEPLOYCHECK_CITUS_SOURCE), else the one our build machines carry beside the checkout
# (../shared/citus/) or in /work/shared/citus/.
if [ -z "${DEPLOYCHECK_CITUS_SOURCE:-}" ]; then
  for candidate in "$ROOT"/../shared/citus/citus-*.tar.gz /work/shared/citus/citus-*.tar.gz; do
    if [ -f "$candidate" ]; then export DEPLOYCHECK_CITUS_SOURCE="$candidate"; break; fi
  done
fi
