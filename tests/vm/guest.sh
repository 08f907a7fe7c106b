#!/bin/bash
# Runs in the cgroup-v2-only guest of tests/test_vm_cgroup_v2.py (scripts/vm-run.sh):
#   guest.sh PYTHON REPORTS [PYTEST ARGS FOR THE NODE RUN...]
# 1. "node": the tests as on a v2 node, the service at the root of the hierarchy;
# 2. "container": tests/test_cgroups_v2.py again in a cgroup namespace of its own, whose
#    root is a "pod" cgroup with limits, with /sys/fs/cgroup mounted read-only as
#    container runtimes mount it.
# Each run writes a JUnit report to REPORTS for the host to read.
set -u
python=$1 reports=$2
shift 2
export DCODEX_REQUIRE_CGROUP_V2=1 PYTHONDONTWRITEBYTECODE=1 DCODEX_CACHE_DIR=/root/.cache/dcodex
export DCODEX_TEST_READY_SECONDS=400
# The services' default limits, for programs that run 15-30x slower than on the host
# (Python starts in about a second of CPU); attacks that set their own keep them.
export DCODEX_SANDBOX_CPU_TIME_LIMIT_SECONDS=10 DCODEX_SANDBOX_WALL_CLOCK_TIMEOUT_SECONDS=30
# Emulation: a stack of services takes minutes to start, a test more than usual.
pytest=("$python" -m pytest -p no:cacheprovider -q -o timeout=900)
status=0

echo "== node: $(uname -r), $(cat /sys/fs/cgroup/cgroup.controllers)"
"${pytest[@]}" --junitxml="$reports/node.xml" tests/test_cgroups_v2.py "$@" || status=1

echo "== container"
pod=/sys/fs/cgroup/pod
mkdir -p "$pod"
echo "+memory +pids +cpu" >/sys/fs/cgroup/cgroup.subtree_control
echo $((1536 * 1024 * 1024)) >"$pod/memory.max"
echo 2000 >"$pod/pids.max"
echo $$ >"$pod/cgroup.procs"
DCODEX_CGROUP_SCENARIO=container unshare --cgroup --mount --propagation private --fork -- \
  sh -c 'umount /sys/fs/cgroup && mount -t cgroup2 -o ro,nosuid,nodev,noexec cgroup2 /sys/fs/cgroup \
         && exec "$@"' sh \
  "${pytest[@]}" --junitxml="$reports/container.xml" tests/test_cgroups_v2.py || status=1
exit $status
