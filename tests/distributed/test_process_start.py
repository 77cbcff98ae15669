"""A crew process that cannot start says why in one line and exits 3 (cli_processes' contract):
here its probe port is taken. uvicorn ends its own start-up with ``sys.exit(3)``, which used
to escape as a traceback ("Task exception was never retrieved", then SystemExit) with the code
3 only by uvicorn's coincidence."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.conftest import bus_url_for
from tests.distributed.conftest import CrewProcess, new_schema


def test_a_taken_probe_port_is_one_error_line_and_exit_3(
    crew_config: Path, pg_database: str, tmp_path: Path
) -> None:
    env = {**os.environ, "PLANTCREW_CONFIG_DIR": str(crew_config), "PLANTCREW_LOG_JSON": "false"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        args = ["worker", "--role", "reviewer", "--bus", bus_url_for("nats")]
        proc = CrewProcess([*args, "--db", new_schema(pg_database)], tmp_path / "w.log", env, port)
        proc.start()
        try:
            assert proc.proc is not None
            code = proc.proc.wait(180)
        finally:
            proc.kill()
    log = proc.tail(200)
    assert code == 3, log
    assert "Traceback" not in log and "never retrieved" not in log, log
    assert "error:" in log and f"127.0.0.1:{port}" in log, log
