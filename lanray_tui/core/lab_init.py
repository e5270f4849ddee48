"""PID 1 of a lab node: reaps every process that ends up orphaned in the node.

``lanray_tui.core.lab`` starts one per node inside its own PID namespace. Daemons started
in the node (double-fork, setsid) are reparented to this process; without a reaper their
zombies would linger, and ``ray stop`` waits on them for 16 s. SIGTERM ends it (and the
kernel then kills the whole node); SIGINT and SIGHUP are ignored so a terminal's Ctrl-C or
hangup cannot take a node down. Its one argument, the node's namespace, is a label by
which ``lab.down()`` finds it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    """Reap children until SIGTERM arrives."""
    # The node's own UTS namespace: name it after the node ("lanray-lab-n2" -> "n2").
    with contextlib.suppress(OSError, IndexError):
        socket.sethostname(sys.argv[1].rsplit("-", 1)[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Blocked signals are queued and taken with sigwaitinfo, so no SIGCHLD can slip in
    # between a check and a wait (as it could with a handler and signal.pause()).
    # Blocking also matters for PID 1: the kernel drops signals PID 1 leaves at SIG_DFL,
    # but never drops blocked ones.
    wanted = {signal.SIGCHLD, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    _reap()  # orphans may have exited before the mask was in place
    # Tell lab.up() (on stdout, a pipe) that the node is ready, then let go of the pipe.
    with contextlib.suppress(OSError):
        os.write(1, b"ready\n")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    while signal.sigwaitinfo(wanted).si_signo != signal.SIGTERM:
        _reap()


if __name__ == "__main__":
    main()
