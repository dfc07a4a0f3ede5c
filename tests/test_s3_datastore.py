"""The S3 datastore against moto's server over HTTP, and its shell scripts run with sh and curl."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import time
from pathlib import Path

import pytest

from awsfake import REGION
from vh_orch.errors import CloudError, ConfigError, UserInputError
from vh_orch.storage.datastore import FileDatastore
from vh_orch.storage.datastores import datastore_from_settings, download_uri, validate_datastore_setting
from vh_orch.storage.inputs import InputFetchError, fetch_inputs, normalise_input_url
from vh_orch.storage.s3 import S3Datastore
from vh_orch.storage.transfer import MiB, download_script, parse_etags, parse_files, upload_script

BUCKET = "vh-orch-test"
HOSTILE = "a b'$(touch pwned1)'\"`touch pwned2`\";touch pwned3\n.txt"
HOSTILE_KEY = HOSTILE.replace("\n", "")  # moto's router answers 404 to a key with %0A in it


@pytest.fixture
def s3(moto):  # type: ignore[no-untyped-def]
    moto.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return moto


def store(moto, uri: str = f"s3://{BUCKET}", **kw) -> S3Datastore:  # type: ignore[no-untyped-def]
    return S3Datastore(uri, endpoint_url=moto.url, region=REGION, **kw)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def stored_bytes(moto, key: str) -> bytes:  # type: ignore[no-untyped-def]
    return moto.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()


def run_sh(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a generated script as a machine would; curl must not be sent through a proxy."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, cwd=cwd, env=env)


@pytest.mark.parametrize(
    ("uri", "prefix"),
    [(f"s3://{BUCKET}", ""), (f"s3://{BUCKET}/runs", "runs/"), (f"s3://{BUCKET}/runs/", "runs/"),
     (f"s3://{BUCKET}//a/b/", "a/b/")],
)
def test_put_and_get_round_trip_with_sha256_and_key_layout(s3, tmp_path: Path, uri: str, prefix: str) -> None:
    data = os.urandom(100_000)
    source = write(tmp_path / "out" / "model.bin", data)

    stored = store(s3, uri).put(source, "checkpoints/model.bin")

    key = f"{prefix}{stored.datum_id}/model.bin"
    assert stored.uri == f"s3://{BUCKET}/{key}"
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert [o["Key"] for o in s3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]] == [key]
    assert stored_bytes(s3, key) == data

    dest = tmp_path / "back" / "model.bin"
    dest.parent.mkdir()
    assert store(s3).get(stored.uri, dest) == (len(data), hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data
    assert os.listdir(dest.parent) == ["model.bin"]  # no .part file left behind


def test_file_above_the_threshold_goes_up_in_parts_and_arrives_whole(s3, tmp_path: Path) -> None:
    data = os.urandom(12 * MiB)
    source = write(tmp_path / "big.bin", data)

    stored = store(s3, multipart_threshold=5 * MiB, part_size=5 * MiB).put(source, "big.bin")

    key = stored.uri.removeprefix(f"s3://{BUCKET}/")
    assert stored_bytes(s3, key) == data
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert s3.client("s3").head_object(Bucket=BUCKET, Key=key)["ETag"].endswith('-3"')  # a 3-part upload
    assert len([s for s in s3.proxy.log if s.method == "PUT" and "partNumber=" in s.path]) == 3


def test_machine_uploads_directly_with_presigned_urls(s3, tmp_path: Path) -> None:
    small, big = os.urandom(1000), os.urandom(11 * MiB)
    outputs = tmp_path / "outputs"
    write(outputs / "small.txt", small)
    write(outputs / "deep" / "big.bin", big)
    datastore = store(s3, multipart_threshold=5 * MiB, part_size=5 * MiB)

    plans = [datastore.plan_upload("small.txt", len(small)), datastore.plan_upload("deep/big.bin", len(big))]
    assert plans[0].url and not plans[0].parts and plans[0].upload_id is None
    assert [(p.number, p.offset, p.length) for p in plans[1].parts] == [
        (1, 0, 5 * MiB), (2, 5 * MiB, 5 * MiB), (3, 10 * MiB, 1 * MiB)]
    s3.proxy.log.clear()

    result = run_sh(upload_script(str(outputs), [("small.txt", plans[0]), ("deep/big.bin", plans[1])]), tmp_path)

    assert result.returncode == 0, result.stderr
    etags = parse_etags(result.stdout)
    assert set(etags) == {1} and set(etags[1]) == {1, 2, 3}
    assert parse_files(result.stdout) == {0: (len(small), hashlib.sha256(small).hexdigest()),
                                          1: (len(big), hashlib.sha256(big).hexdigest())}
    datastore.complete_upload(plans[0], {})
    datastore.complete_upload(plans[1], etags[1])
    assert stored_bytes(s3, plans[0].key) == small
    assert stored_bytes(s3, plans[1].key) == big
    assert plans[1].key.endswith(f"{plans[1].datum_id}/big.bin")
    puts = [s for s in s3.proxy.log if s.method == "PUT"]
    assert len(puts) == 4 and all(s.user_agent.startswith("curl/") for s in puts)


def test_machine_downloads_presigned_urls_and_reports_sizes_and_sha256(s3, tmp_path: Path) -> None:
    datastore = store(s3)
    files = [os.urandom(3000), b"", os.urandom(2 * MiB + 7)]
    uris = [datastore.put(write(tmp_path / f"src{i}", data), f"f{i}").uri for i, data in enumerate(files)]
    dests = ["a.bin", "empty", "nested/dir/c.bin"]
    inputs = tmp_path / "inputs"

    script = download_script(str(inputs), [(d, datastore.presigned_get(u)) for d, u in zip(dests, uris)])
    result = run_sh(script, tmp_path)

    assert result.returncode == 0, result.stderr
    assert parse_files(result.stdout) == {i: (len(d), hashlib.sha256(d).hexdigest()) for i, d in enumerate(files)}
    assert [(inputs / d).read_bytes() for d in dests] == files


def test_hostile_file_name_is_data_not_code(s3, tmp_path: Path) -> None:
    work = tmp_path / "work"
    outputs = work / "outputs"
    data = b"payload\n"
    write(outputs / HOSTILE, data)
    datastore = store(s3)

    plan = datastore.plan_upload(HOSTILE_KEY, len(data))
    uploaded = run_sh(upload_script(str(outputs), [(HOSTILE, plan)]), work)
    assert uploaded.returncode == 0, uploaded.stderr
    datastore.complete_upload(plan, {})
    assert plan.key.endswith(f"/{HOSTILE_KEY}")
    assert stored_bytes(s3, plan.key) == data

    downloaded = run_sh(download_script(str(work / "in"), [(f"d/{HOSTILE}", datastore.presigned_get(plan.uri))]), work)
    assert downloaded.returncode == 0, downloaded.stderr
    assert parse_files(downloaded.stdout) == {0: (len(data), hashlib.sha256(data).hexdigest())}
    assert (work / "in" / "d" / HOSTILE).read_bytes() == data
    assert sorted(p.name for p in work.iterdir()) == ["in", "outputs"]  # no pwned* files


def test_refused_part_stops_the_upload_script_and_names_the_file(s3, tmp_path: Path) -> None:
    write(tmp_path / "out" / "big data.bin", os.urandom(11 * MiB))
    datastore = store(s3, multipart_threshold=5 * MiB, part_size=5 * MiB)
    plan = datastore.plan_upload("big data.bin", 11 * MiB)
    s3.proxy.fail_request("PUT", "partNumber=2", "AccessDenied", status=403)

    result = run_sh(upload_script(str(tmp_path / "out"), [("big data.bin", plan)]), tmp_path)

    assert result.returncode != 0
    assert f"upload of part 2 of {tmp_path}/out/big data.bin failed" in result.stderr
    assert 2 not in parse_etags(result.stdout).get(0, {})
    # A refusal is final: the part was asked for once (parts go up concurrently, so part 3 may have been too).
    assert len([s for s in s3.proxy.log if "partNumber=2" in s.path]) == 1
    datastore.abort_upload(plan)
    assert s3.client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_upload_that_does_not_match_its_plan_is_refused(s3, tmp_path: Path) -> None:
    write(tmp_path / "out" / "f.txt", b"shorter than planned")
    datastore = store(s3)
    plan = datastore.plan_upload("f.txt", 1000)
    assert run_sh(upload_script(str(tmp_path / "out"), [("f.txt", plan)]), tmp_path).returncode == 0

    with pytest.raises(CloudError, match="S3 holds 20 bytes, 1000 were planned"):
        datastore.complete_upload(plan, {})
    datastore.abort_upload(plan)
    assert "Contents" not in s3.client("s3").list_objects_v2(Bucket=BUCKET)


def test_multipart_plan_is_never_more_than_10000_parts(s3) -> None:
    size = 700 * 1024 * MiB + 123
    plan = store(s3, multipart_threshold=5 * MiB, part_size=64 * MiB).plan_upload("huge.bin", size)

    assert len(plan.parts) <= 10_000
    assert all(p.length % MiB == 0 and p.length >= 5 * MiB for p in plan.parts[:-1])
    assert [p.offset for p in plan.parts] == list(itertools.accumulate((p.length for p in plan.parts[:-1]), initial=0))
    assert sum(p.length for p in plan.parts) == size


def test_refused_part_fails_put_loudly_and_leaves_nothing_behind(s3, tmp_path: Path) -> None:
    s3.proxy.fail_request("PUT", "partNumber=2", "AccessDenied", status=403, message="Access Denied")
    source = write(tmp_path / "big.bin", os.urandom(12 * MiB))

    with pytest.raises(ConfigError, match="S3 said AccessDenied: Access Denied; check the datastore"):
        store(s3, multipart_threshold=5 * MiB, part_size=5 * MiB).put(source, "big.bin")

    client = s3.client("s3")
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []  # aborted
    assert "Contents" not in client.list_objects_v2(Bucket=BUCKET)


def test_missing_bucket_is_a_config_error(s3, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NoSuchBucket"):
        store(s3, "s3://no-such-bucket").put(write(tmp_path / "f", b"x"), "f")


BAD_SETTINGS = [
    ("s3://", "names no bucket"),
    ("s3:///prefix", "names no bucket"),
    ("s3://Bad_Bucket", "'Bad_Bucket' is not a valid S3 bucket name; use s3://bucket or s3://bucket/prefix"),
    ("s3://ab", "'ab' is not a valid S3 bucket name"),
    ("s3://a..b", "is not a valid S3 bucket name"),
    ("s3://192.168.1.1", "is not a valid S3 bucket name"),
    ("s3://bucket/pre?fix", "may not contain '?'"),
    ("ftp://host/x", "'ftp://host/x' is not a file://, s3:// or gs:// URI; accepted: no setting"),
    ("file://host/x", "not a local file URI"),
    (42, "datastore setting 42 is not understood; accepted: no setting"),
    ({"endpoint_url": "http://127.0.0.1:9"}, "is not understood; accepted:"),
    ({"uri": "s3://bucket", "endpont_url": "http://x"}, "unknown keys ['endpont_url']; accepted:"),
    ({"uri": "s3://bucket", "endpoint_url": "127.0.0.1:9000"}, "must be an http:// or https:// URL"),
    ({"uri": "s3://bucket", "region": "EU West"}, "not a region name like eu-west-1"),
    ({"uri": "s3://bucket", "multipart_threshold_mb": "64"}, "multipart_threshold_mb '64' must be a whole number"),
    ({"uri": "s3://bucket", "multipart_threshold_mb": 6000}, "multipart_threshold_mb 6000 must be a whole number"),
    ({"uri": "file:///data", "region": "eu-west-1"}, "a file:// datastore takes no other settings"),
]


@pytest.mark.parametrize(("value", "message"), BAD_SETTINGS, ids=[str(v) for v, _ in BAD_SETTINGS])
def test_bad_datastore_setting_is_refused_with_the_accepted_forms(tmp_path: Path, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as checked:
        validate_datastore_setting(value)
    assert message in str(checked.value)
    with pytest.raises(ConfigError) as built:
        datastore_from_settings(value, tmp_path)
    assert message in str(built.value)


def test_datastore_settings_pick_the_datastore(tmp_path: Path) -> None:
    default = datastore_from_settings(None, tmp_path)
    assert isinstance(default, FileDatastore) and default.root == tmp_path
    folder = datastore_from_settings("file:///srv/vh-data", tmp_path)
    assert isinstance(folder, FileDatastore) and folder.root == Path("/srv/vh-data")
    plain = datastore_from_settings("s3://bucket/team", tmp_path)
    assert isinstance(plain, S3Datastore) and (plain.bucket, plain.prefix) == ("bucket", "team")
    tuned = datastore_from_settings({"uri": "s3://bucket", "endpoint_url": "http://127.0.0.1:9",
                                     "region": REGION, "multipart_threshold_mb": 8}, tmp_path)
    assert isinstance(tuned, S3Datastore) and tuned.multipart_threshold == 8 * MiB
    with pytest.raises(ConfigError, match="part size"):
        S3Datastore("s3://bucket", part_size=3 * MiB)


def test_s3_inputs_are_checked_at_submit_and_fetched(s3, tmp_path: Path) -> None:
    datastore = store(s3)
    data = os.urandom(5000)
    uri = datastore.put(write(tmp_path / "train.csv", data), "train.csv").uri
    assert normalise_input_url("data", uri, lambda _: False) == uri
    for bad in ("s3://", f"s3://{BUCKET}", f"s3://{BUCKET}/", f"s3://{BUCKET}/dir/"):
        with pytest.raises(UserInputError, match="needs a bucket and an object key; use a local path, file://"):
            normalise_input_url("data", bad, lambda _: False)

    settings = {"uri": f"s3://{BUCKET}", "endpoint_url": s3.url, "region": REGION}
    config = fetch_inputs({"data": [uri]}, {}, tmp_path / "inputs", "/valohai/inputs", lambda _: ("", ""),
                          datastore_settings=settings)

    assert config["data"]["files"] == [{
        "name": "train.csv", "path": "/valohai/inputs/data/train.csv", "uri": uri, "size": len(data),
        "checksums": {"sha256": hashlib.sha256(data).hexdigest()}}]
    assert (tmp_path / "inputs" / "data" / "train.csv").read_bytes() == data
    with pytest.raises(InputFetchError, match="input 'data': cannot fetch .*NoSuchKey"):
        fetch_inputs({"data": [f"s3://{BUCKET}/nope/x.csv"]}, {}, tmp_path / "inputs", "/v", lambda _: ("", ""),
                     datastore_settings=settings)


def test_download_uri_without_settings_uses_boto3_defaults(s3, tmp_path: Path, monkeypatch) -> None:
    data = b"hello s3"
    uri = store(s3).put(write(tmp_path / "h.txt", data), "h.txt").uri
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)

    assert download_uri(uri, tmp_path / "copy.txt") == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "copy.txt").read_bytes() == data


def test_a_connection_cut_mid_upload_sends_the_broken_part_again(s3, tmp_path: Path) -> None:
    """The machine's upload goes through a TCP proxy that resets every connection once the upload is under way:
    curl's broken PUT of a part goes again (the parts already stored stay), and the object arrives whole."""
    from urllib.parse import urlsplit

    from chaos_faults import TcpProxy
    from quietserver import free_port

    data = os.urandom(16 * MiB)
    write(tmp_path / "out" / "big.bin", data)
    upstream = urlsplit(s3.url)
    proxy = TcpProxy(("127.0.0.1", free_port()), (upstream.hostname, upstream.port))
    proxy.start()
    try:
        datastore = S3Datastore(f"s3://{BUCKET}", endpoint_url=f"http://127.0.0.1:{proxy.listen[1]}", region=REGION,
                                multipart_threshold=5 * MiB, part_size=5 * MiB)
        plan = datastore.plan_upload("big.bin", len(data))
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        script = upload_script(str(tmp_path / "out"), [("big.bin", plan)], jobs=1)
        # Parts one at a time, throttled by curl, so the cut lands in the middle of one.
        script = script.replace("send -o /dev/null -D", "send --limit-rate 4M -o /dev/null -D")
        machine = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env, cwd=tmp_path)
        deadline = time.monotonic() + 30
        while proxy.upstream_bytes < 7 * MiB and machine.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy.cut() >= 1, "nothing was under way to cut"
        out, err = machine.communicate(timeout=120)
        assert machine.returncode == 0, err
        datastore.complete_upload(plan, parse_etags(out)[0])
        assert stored_bytes(s3, plan.key) == data
        assert proxy.upstream_bytes < 2 * len(data)  # the broken part went again, not the whole file
    finally:
        proxy.stop()
