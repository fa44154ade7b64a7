"""What the GPU check (``python -m rspose_tune.bench gpu``) leaves and how it stops: ``--out DIR`` (the log,
a tee of stdout and stderr, and the JSON rewritten after each step), the ``--deadline`` timer, and the
usage error printed as one ``error:`` line."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rspose_tune.errors import RSPoseTuneError

__all__ = ["JSON_NAME", "LOG_NAME"]

JSON_NAME = "gpu_check.json"
LOG_NAME = "gpu_check.log"


class _UsageError(RSPoseTuneError):
    """A bad flag or environment: printed as one ``error:`` line, exit 2."""


class _Tee:
    """A text stream that writes to the original stream and to the log file (both flushed per write)."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._stream.write(text)
        self._stream.flush()
        self._log.write(text)
        self._log.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()
        self._log.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


class _Record:
    """``--out DIR``: the log (a tee of stdout and stderr) and the JSON, rewritten whole after each step."""

    def __init__(self, out: str | None, argv: list[str]):
        self.dir = Path(out).absolute() if out else None
        self.data: dict[str, Any] = {"argv": ["python", "-m", "rspose_tune.bench", "gpu", *argv],
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "finished": False, "status": "starting", "log": LOG_NAME,
                                     "results": {}, "errors": {}}
        self.log = None
        self._saved = None

    def open(self) -> None:
        if self.dir is None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.log = (self.dir / LOG_NAME).open("w", encoding="utf-8")
            self.write()
        except OSError as exc:
            raise _UsageError(f"--out {self.dir}: cannot write there ({exc.strerror or exc})") from None
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self.log), _Tee(sys.stderr, self.log)

    def update(self, **kw: Any) -> None:
        self.data.update(kw)
        self.write()

    def write(self) -> None:
        if self.dir is None:
            return
        tmp = self.dir / f".{JSON_NAME}.tmp"
        tmp.write_text(json.dumps(_jsonable(self.data), indent=1) + "\n")
        os.replace(tmp, self.dir / JSON_NAME)

    def close(self) -> None:
        if self._saved:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self.log:
            self.log.close()
            self.log = None


def _arm_deadline(seconds: float, record: _Record) -> Callable[[], None]:
    """After ``seconds``: print every thread's stack, mark the JSON, exit 3. Returns the disarm function.

    A Python timer thread does it (it needs the GIL; collectives and CUDA waits release it);
    faulthandler's C watchdog, 30 s later, exits even if the interpreter is wedged.
    """
    import faulthandler
    import threading

    if seconds <= 0:
        return lambda: None

    def fire() -> None:
        print(f"\nerror: --deadline {seconds:.0f} s reached; the stacks of every thread follow; exit 3", file=sys.stderr,
              flush=True)
        faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
        if record.log:
            record.log.flush()
            faulthandler.dump_traceback(file=record.log, all_threads=True)
        record.update(status=f"deadline: stopped after {seconds:.0f} s")
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(seconds + 30, exit=True, file=sys.__stderr__)

    def disarm() -> None:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()

    return disarm
