#!/usr/bin/env bash
# libcem on Vast.ai: train a preset into a run folder on the instance's volume, safe from SSH
# disconnects, continuing from the latest checkpoint whenever it is started again.
#
#   bash libcem-vast.sh          start (or continue) training in the background, then follow its log;
#                                Ctrl-C stops following, not training; log out whenever you like
#   bash libcem-vast.sh status   is it training? the last lines of its log
#   bash libcem-vast.sh stop     stop training (starting again continues from the latest checkpoint)
#
# Settings, as environment variables: PRESET (a name from `libcem presets`, or auto), RUN_ROOT (a folder
# on the volume that outlives the instance), RUN_NAME, STEPS (train the prior further than the preset), INSTALL
# (what pip installs when libcem is missing and no wheel lies beside this script: a git URL or a published
# name), PYTHON, FOLLOW=0 (do not follow the log), LIBCEM_KIT_SMOKE=1 (the tiny preset in the foreground: a
# test on any CPU). libcem is installed from the wheel `libcem kit` wrote beside this script (@WHEEL@):
# copy both with scp into one folder.
set -euo pipefail

PRESET="${PRESET:-@PRESET@}"
RUN_ROOT="${RUN_ROOT:-/workspace/libcem}"
RUN_NAME="${RUN_NAME:-@RUN_NAME@}"
INSTALL="${INSTALL:-@INSTALL@}"
WHEEL="@WHEEL@"
HERE="$(cd "$(dirname "$0")" && pwd)"
STEPS="${STEPS:-}"
PYTHON="${PYTHON:-python3}"
SMOKE="${LIBCEM_KIT_SMOKE:-0}"
RUN="$RUN_ROOT/$RUN_NAME"
LOG="$RUN/train.log"
PIDFILE="$RUN/train.pid"

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

install_libcem() {  # from the wheel beside this script, else from INSTALL, else say what to copy where
  if "$PYTHON" -c "import libcem" 2>/dev/null; then return; fi
  local spec="$INSTALL" wheels=("$HERE/$WHEEL" "$HERE"/libcem-*.whl)
  for wheel in "${wheels[@]}"; do
    if [[ -f "$wheel" ]]; then spec="${wheel}[text]"; break; fi
  done
  if [[ -z "$spec" ]]; then
    echo "libcem is not installed: copy $WHEEL (written by libcem kit beside this script) into $HERE with scp, then run bash $0 again (or set INSTALL to a git URL or a published name)" >&2
    exit 1
  fi
  echo "installing $spec"
  if ! "$PYTHON" -m pip install -q "$spec" 2>"$RUN/pip.log"; then
    echo "pip could not install $spec: $(grep -v '^ *$' "$RUN/pip.log" | tail -n 1)" >&2
    exit 1
  fi
}

train() {  # in the foreground: GPU check, preset, both stages with --resume, a sample grid, the files to keep
  "$PYTHON" - "$PRESET" "$SMOKE" "$RUN" "$STEPS" <<'PY'
import sys
from pathlib import Path

from libcem.platforms.runtime import gpu_report, pick_preset, print_keep_list, sample_grid, stream, train_command

requested, smoke, run, steps = sys.argv[1], sys.argv[2] == "1", Path(sys.argv[3]), sys.argv[4]
gpu_gib, gpus = gpu_report("vast")
preset = pick_preset(requested, gpu_gib, smoke)
stream(train_command(preset, run, gpus, int(steps) if steps else None))
grid = sample_grid(run)
if grid:
    print("samples:", grid)
print_keep_list(run, "on the instance's volume; copy it off with scp or `vastai copy` before destroying the instance")
PY
}

mkdir -p "$RUN"
case "${1:-start}" in
  start) ;;
  foreground) trap 'rm -f "$PIDFILE"' EXIT; install_libcem; train; exit ;;
  status)
    if running; then echo "training (pid $(cat "$PIDFILE")), run folder $RUN"; else echo "not training; run folder $RUN"; fi
    if [[ -f "$LOG" ]]; then tail -n 5 "$LOG"; fi
    exit ;;
  stop)
    if running; then kill -TERM -- "-$(cat "$PIDFILE")" && echo "stopped; start again to continue"; else echo "not training"; fi
    exit ;;
  *) echo "usage: bash $0 [start|status|stop]" >&2; exit 2 ;;
esac

install_libcem
if [[ "$SMOKE" == 1 ]]; then
  train
  exit
fi
if running; then
  echo "already training (pid $(cat "$PIDFILE")); following its log"
else
  nohup setsid bash "$0" foreground >>"$LOG" 2>&1 &
  echo "$!" >"$PIDFILE"
  echo "training in the background (pid $!), safe from SSH disconnects; log: $LOG"
fi
if [[ "${FOLLOW:-1}" == 1 ]]; then
  echo "following the log: Ctrl-C stops following, not training"
  tail -n 20 -F "$LOG"
fi
