# Sourced by scripts/test. bounded SECONDS LABEL COMMAND...: runs COMMAND in a process group
# of its own under a hard time limit. A command still running at the limit has what every
# process of the group was doing printed (Java threads with jcmd, others' stacks with gdb, and
# the last lines of the log of every sluice broker it started: their stderr), then the group
# gets SIGTERM and, 10 s later, SIGKILL; bounded returns 124. Otherwise it returns COMMAND's
# status. A hang thus fails in minutes, showing where it was stuck.

BOUNDED_LOG_TAIL_LINES=60

bounded() {
    local limit=$1 label=$2
    shift 2
    # Not a group leader (no job control here), so setsid makes this very process one.
    setsid "$@" &
    local group=$! start=$SECONDS
    while kill -0 "$group" 2>/dev/null; do
        if [ $((SECONDS - start)) -ge "$limit" ]; then
            report_overrun "$group" "$label" "$limit"
            kill -TERM -- "-$group" 2>/dev/null || true
            sleep 10
            kill -KILL -- "-$group" 2>/dev/null || true
            wait "$group" 2>/dev/null || true
            return 124
        fi
        sleep 1
    done
    wait "$group"
}

report_overrun() {
    local group=$1 label=$2 limit=$3 pid comm log
    echo "=== $label overran its limit of $limit s; what its processes were doing:"
    ps -o pid,ppid,etime,stat,wchan:20,args -g "$group" 2>/dev/null || ps -ef
    for pid in $(pgrep -g "$group"); do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
        case "$comm" in
            java)
                echo "=== $pid ($comm): threads"
                timeout 30 jcmd "$pid" Thread.print 2>&1 | head -n 400 || true ;;
            sluice)
                log=$(readlink "/proc/$pid/fd/2" 2>/dev/null || true)
                echo "=== $pid ($comm): threads"
                timeout 60 gdb -batch -nx -p "$pid" -ex 'thread apply all bt 30' 2>/dev/null | grep -E '^(Thread|#)' || true
                if [ -f "$log" ]; then
                    echo "=== $pid ($comm): last $BOUNDED_LOG_TAIL_LINES lines of $log"
                    tail -n "$BOUNDED_LOG_TAIL_LINES" "$log"
                fi ;;
            bash|sh|setsid|timeout|sleep|mvn) ;;
            *)
                echo "=== $pid ($comm): threads"
                timeout 60 gdb -batch -nx -p "$pid" -ex 'thread apply all bt 30' 2>/dev/null | grep -E '^(Thread|#)' || true ;;
        esac
    done
}
