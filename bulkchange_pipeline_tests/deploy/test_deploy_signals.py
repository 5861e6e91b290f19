"""`deploy-local stop` reaches services started from a launcher that ignores SIGINT.

A shell ignores SIGINT in what it starts with ``nohup`` or as a background job, ignored signals
survive exec, and Dagster's processes set SIGTERM to whatever SIGINT does. Found when the whole
suite ran under ``nohup``: the code server ignored SIGTERM and `stop` had to SIGKILL it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# A launcher that ignores SIGINT and SIGTERM spawns a service that, as Dagster does, maps SIGTERM
# onto SIGINT's disposition and then waits; the launcher stops it and prints what `stop` said.
LAUNCHER = textwrap.dedent(
    """
    import signal, sys
    from pathlib import Path
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from bulkchange_pipeline import deploy

    SERVICE = [sys.executable, "-c",
               "import signal, time; signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT)); time.sleep(60)"]

    class OneService(deploy.LocalDeployment):
        def commands(self):
            return {"intake": SERVICE}

    dep = OneService(Path(sys.argv[1]))
    for folder in ("logs", "pids"):
        (dep.run_dir / folder).mkdir(parents=True, exist_ok=True)
    pid = deploy.spawn(dep, "intake", {})
    import time; time.sleep(1.0)  # the service has installed its SIGTERM handler
    print(deploy.terminate(pid, 5.0))
    """
)


def test_a_service_started_by_a_launcher_ignoring_sigint_still_stops_on_sigterm(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", LAUNCHER, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped", done.stdout + done.stderr
