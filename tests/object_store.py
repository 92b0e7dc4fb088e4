"""An S3 object store on 127.0.0.1 for tests: moto's server, which speaks the S3 protocol pyarrow's
S3 client (the one Ray Data reads with) talks. Import this before Ray starts a local cluster: the
credentials and cache folder below are in the environment its workers inherit."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from engine.data.remote import CACHE_ENV

# moto accepts any key; the instance-metadata switch keeps the AWS SDK from looking for a role off this machine
os.environ.setdefault("AWS_ACCESS_KEY_ID", "eve-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "eve-test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault(CACHE_ENV, tempfile.mkdtemp(prefix="eve-remote-cache-"))

BUCKET = "cohorts"


@contextlib.contextmanager
def local_s3():
    """A fresh store with bucket `BUCKET`; yields its endpoint, http://127.0.0.1:<port>."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def upload(endpoint: str, folder: Path, prefix: str, names=None) -> str:
    """Copy `folder`'s files (or `names` of them) under s3://BUCKET/prefix; returns the folder's URI."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    paths = [folder / n for n in names] if names else [p for p in folder.rglob("*") if p.is_file()]
    for path in paths:
        if ".eve_cache" not in path.parts:
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return uri(endpoint, prefix)


def uri(endpoint: str, prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}?endpoint_override={endpoint}&region=us-east-1"


def copy_subjects(source: Path, dest: Path, n: int) -> Path:
    """A small cohort as a user would hand one over: the first `n` rows of a dataset folder's
    features.csv and their files, copied to `dest`."""
    import shutil

    import pandas as pd

    table = pd.read_csv(source / "features.csv").head(n)
    for name in table["file"]:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, dest / name)
    table.to_csv(dest / "features.csv", index=False)
    return dest
