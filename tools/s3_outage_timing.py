"""How long one S3 request waits against a stopped S3 server, with pyarrow's default retries and with
rspose_tune's (docs/soak.md#what-it-found). Starts moto's server on 127.0.0.1 and stops it after.

    PYTHONPATH=. python tools/s3_outage_timing.py
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs

from rspose_tune._storage import filesystem
from rspose_tune.bench._cluster import S3Server


def main() -> None:
    s3 = S3Server(Path(tempfile.mkdtemp(prefix="s3timing_")) / "s3.log")
    s3.start()
    try:
        s3.create_bucket("bkt")
        os.environ.update(s3.env)
        retrying, _ = filesystem("s3://bkt/x")
        plain, _ = pafs.FileSystem.from_uri("s3://bkt/x")
        for name, fs in (("pyarrow default", plain), ("RetryingS3FileSystem", retrying)):
            s3.pause()
            start = time.monotonic()
            try:
                fs.get_file_info("bkt/x")
                outcome = "answered"
            except OSError as exc:
                outcome = str(exc).splitlines()[0][:100]
            print(f"{name}: stopped server, HeadObject gave up after {time.monotonic() - start:.1f} s: {outcome}")
            s3.resume()
        s3.pause()
        start = time.monotonic()
        threading.Timer(30, s3.resume).start()
        with retrying.open_output_stream("bkt/y") as f:
            f.write(b"x")
        print(f"RetryingS3FileSystem: PUT during a 30 s outage finished after {time.monotonic() - start:.1f} s")
    finally:
        s3.stop()


if __name__ == "__main__":
    main()
