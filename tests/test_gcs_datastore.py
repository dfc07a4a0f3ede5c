"""The GCS datastore against gcp-storage-emulator over HTTP, and the transfer scripts run with sh and curl.

The emulator does not check signed URLs, so every request goes through gcsfake's proxy,
which checks V4 signatures the way GCS does before forwarding (see gcsfake.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from gcsfake import SERVICE_ACCOUNT, EmulatedGCS
from vh_orch.errors import CloudError, ConfigError, TransientCloudError, UserInputError
from vh_orch.orchestrator.runner import ExecutionRunner
from vh_orch.storage.datastores import datastore_from_settings, download_uri, validate_datastore_setting
from vh_orch.storage.gcs import GCSDatastore, _HashingSink
from vh_orch.storage.inputs import InputFetchError, fetch_inputs, normalise_input_url
from vh_orch.storage.s3 import S3Datastore
from vh_orch.storage.transfer import MiB, download_script, parse_etags, parse_files, upload_script

BUCKET = "vh-orch-test"
HOSTILE = "a b'$(touch pwned1)'\"`touch pwned2`\";touch pwned3\n.txt"
HOSTILE_KEY = HOSTILE.replace("\n", "_")  # GCS refuses line breaks in object names


def store(gcs: EmulatedGCS, uri: str = f"gs://{BUCKET}", **kw) -> GCSDatastore:  # type: ignore[no-untyped-def]
    kw.setdefault("signing_credentials", gcs.account.credentials())
    kw.setdefault("retry_deadline_s", 3)
    return GCSDatastore(uri, endpoint_url=gcs.url, credentials="anonymous", **kw)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def stored(gcs: EmulatedGCS) -> dict[str, bytes]:
    return gcs.objects(BUCKET)


def run_sh(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a generated script as a machine would; curl must not be sent through a proxy."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, cwd=cwd, env=env)


@pytest.mark.parametrize(
    ("uri", "prefix"),
    [(f"gs://{BUCKET}", ""), (f"gs://{BUCKET}/runs", "runs/"), (f"gs://{BUCKET}//a/b/", "a/b/")],
)
def test_put_and_get_round_trip_with_sha256_and_key_layout(gcs, tmp_path: Path, uri: str, prefix: str) -> None:
    data = os.urandom(100_000)
    source = write(tmp_path / "out" / "model.bin", data)

    put = store(gcs, uri).put(source, "checkpoints/model.bin")

    key = f"{prefix}{put.datum_id}/model.bin"
    assert put.uri == f"gs://{BUCKET}/{key}"
    assert (put.size, put.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert stored(gcs) == {key: data}

    dest = tmp_path / "back" / "model.bin"
    dest.parent.mkdir()
    assert store(gcs).get(put.uri, dest) == (len(data), hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data
    assert os.listdir(dest.parent) == ["model.bin"]  # no .part file left behind


def test_file_above_the_chunk_size_goes_up_in_one_resumable_upload_and_arrives_whole(gcs, tmp_path: Path) -> None:
    data = os.urandom(MiB + 7)
    source = write(tmp_path / "big.bin", data)

    put = store(gcs, chunk_size=256 * 1024).put(source, "big.bin")

    assert stored(gcs) == {put.uri.removeprefix(f"gs://{BUCKET}/"): data}
    assert (put.size, put.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert len([s for s in gcs.proxy.log if s.method == "POST" and "uploadType=resumable" in s.path]) == 1
    assert len([s for s in gcs.proxy.log if s.method == "PUT" and "upload_id=" in s.path]) == 5  # 4 full + the rest


def test_machine_uploads_directly_with_one_signed_put_per_file(gcs, tmp_path: Path) -> None:
    small, big = os.urandom(1000), os.urandom(11 * MiB)
    outputs = tmp_path / "outputs"
    write(outputs / "small.txt", small)
    write(outputs / "deep" / "big.bin", big)
    datastore = store(gcs)

    plans = [datastore.plan_upload("small.txt", len(small)), datastore.plan_upload("deep/big.bin", len(big))]
    assert all(p.url and not p.parts and p.upload_id is None for p in plans)  # GCS takes 5 TiB in one PUT
    query = parse_qs(urlsplit(plans[1].url).query)  # type: ignore[arg-type]
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"] and query["X-Goog-Expires"] == ["3600"]
    assert query["X-Goog-Credential"][0].startswith(f"{SERVICE_ACCOUNT}/")
    assert urlsplit(plans[1].url).path == f"/{BUCKET}/{plans[1].key}"  # GCS's XML API form  # type: ignore[arg-type]
    gcs.proxy.log.clear()

    result = run_sh(upload_script(str(outputs), [("small.txt", plans[0]), ("deep/big.bin", plans[1])]), tmp_path)

    assert result.returncode == 0, result.stderr
    assert parse_etags(result.stdout) == {}
    assert parse_files(result.stdout) == {0: (len(small), hashlib.sha256(small).hexdigest()),
                                          1: (len(big), hashlib.sha256(big).hexdigest())}
    for plan in plans:
        datastore.complete_upload(plan, {})
    assert stored(gcs) == {plans[0].key: small, plans[1].key: big}
    assert plans[1].key == f"{plans[1].datum_id}/big.bin"
    puts = [s for s in gcs.proxy.log if s.method == "PUT"]
    assert len(puts) == 2 and all(s.signed and s.status == 200 and s.user_agent.startswith("curl/") for s in puts)


def test_machine_downloads_signed_urls_and_reports_sizes_and_sha256(gcs, tmp_path: Path) -> None:
    datastore = store(gcs)
    files = [os.urandom(3000), b"", os.urandom(2 * MiB + 7)]
    uris = [datastore.put(write(tmp_path / f"src{i}", data), f"f{i}").uri for i, data in enumerate(files)]
    dests = ["a.bin", "empty", "nested/dir/c.bin"]
    inputs = tmp_path / "inputs"
    gcs.proxy.log.clear()

    script = download_script(str(inputs), [(d, datastore.presigned_get(u)) for d, u in zip(dests, uris)])
    result = run_sh(script, tmp_path)

    assert result.returncode == 0, result.stderr
    assert parse_files(result.stdout) == {i: (len(d), hashlib.sha256(d).hexdigest()) for i, d in enumerate(files)}
    assert [(inputs / d).read_bytes() for d in dests] == files
    assert [(s.method, s.signed, s.status) for s in gcs.proxy.log] == [("GET", True, 200)] * 3


def test_hostile_file_name_is_data_not_code(gcs, tmp_path: Path) -> None:
    work = tmp_path / "work"
    outputs = work / "outputs"
    data = b"payload\n"
    write(outputs / HOSTILE, data)
    datastore = store(gcs)

    plan = datastore.plan_upload(HOSTILE, len(data))
    uploaded = run_sh(upload_script(str(outputs), [(HOSTILE, plan)]), work)
    assert uploaded.returncode == 0, uploaded.stderr
    datastore.complete_upload(plan, {})
    assert plan.key == f"{plan.datum_id}/{HOSTILE_KEY}"
    assert stored(gcs) == {plan.key: data}

    downloaded = run_sh(download_script(str(work / "in"), [(f"d/{HOSTILE}", datastore.presigned_get(plan.uri))]), work)
    assert downloaded.returncode == 0, downloaded.stderr
    assert parse_files(downloaded.stdout) == {0: (len(data), hashlib.sha256(data).hexdigest())}
    assert (work / "in" / "d" / HOSTILE).read_bytes() == data
    assert sorted(p.name for p in work.iterdir()) == ["in", "outputs"]  # no pwned* files


def test_signed_urls_are_good_only_for_their_object_and_method(gcs, tmp_path: Path) -> None:
    datastore = store(gcs)
    write(tmp_path / "out" / "f.txt", b"data")
    uri = datastore.put(tmp_path / "out" / "f.txt", "f.txt").uri
    get_url = datastore.presigned_get(uri)
    plan = datastore.plan_upload("f.txt", 4)

    misused = upload_script(str(tmp_path / "out"), [("f.txt", plan)]).replace(plan.url, get_url)  # type: ignore[arg-type]
    result = run_sh(misused, tmp_path)
    assert result.returncode != 0
    assert f"upload of {tmp_path}/out/f.txt failed" in result.stderr and "403" in result.stderr
    assert [(s.method, s.status) for s in gcs.proxy.log if s.signed] == [("PUT", 403)]

    other = get_url.replace("/f.txt?", "/g.txt?")
    unsigned = get_url.split("?")[0]
    result = run_sh(download_script(str(tmp_path / "in"), [("g", other), ("u", unsigned)]), tmp_path)
    assert result.returncode != 0 and "download of" in result.stderr
    assert [s.status for s in gcs.proxy.log if s.method == "GET"][-1] == 403

    with pytest.raises(CloudError, match="GCS holds no such object; the upload did not arrive"):
        datastore.complete_upload(plan, {})


def test_upload_that_does_not_match_its_plan_is_refused_and_aborted(gcs, tmp_path: Path) -> None:
    write(tmp_path / "out" / "f.txt", b"shorter than planned")
    datastore = store(gcs)
    plan = datastore.plan_upload("f.txt", 1000)
    assert run_sh(upload_script(str(tmp_path / "out"), [("f.txt", plan)]), tmp_path).returncode == 0

    with pytest.raises(CloudError, match="GCS holds 20 bytes, 1000 were planned"):
        datastore.complete_upload(plan, {})
    datastore.abort_upload(plan)
    assert stored(gcs) == {}
    datastore.abort_upload(plan)  # nothing left to delete is fine


@pytest.mark.parametrize("size", [1, 300 * 1024], ids=["one-request", "resumable"])
def test_missing_bucket_is_a_config_error(gcs, tmp_path: Path, size: int) -> None:
    with pytest.raises(ConfigError, match="GCS said 404.*check that the datastore's bucket exists"):
        store(gcs, "gs://no-such-bucket", chunk_size=256 * 1024).put(write(tmp_path / "f", os.urandom(size)), "f")


def test_refused_and_failing_requests_map_onto_the_error_family(gcs, tmp_path: Path) -> None:
    source = write(tmp_path / "f", b"x")
    gcs.proxy.fail_request("POST", "/upload/storage/v1/", 403, "forbidden", times=1)
    with pytest.raises(ConfigError, match="GCS said 403.*roles/storage.objectUser"):
        store(gcs).put(source, "f")

    gcs.proxy.fail_request("POST", "/upload/storage/v1/", 503, "backendError", times=1)
    assert store(gcs).put(source, "f").size == 1  # retried once, then stored

    gcs.proxy.fail_request("GET", "/download/storage/v1/", 503, "backendError")
    with pytest.raises(TransientCloudError, match=r"still failing after retries \(GCS said 503: injected"):
        store(gcs, retry_deadline_s=1.5).get(f"gs://{BUCKET}/x/f", tmp_path / "copy")
    assert not (tmp_path / "copy").exists() and not (tmp_path / ".copy.part").exists()

    before = stored(gcs)
    gcs.proxy.fail_request("PUT", "upload_id=", 503, "backendError")
    big = write(tmp_path / "big", os.urandom(MiB))
    with pytest.raises(TransientCloudError, match="still failing after retries.*503"):
        store(gcs, chunk_size=256 * 1024, retry_deadline_s=1.5).put(big, "big")
    assert stored(gcs) == before  # the resumable upload was never finalised


def test_missing_object_is_a_cloud_error_and_leaves_no_file(gcs, tmp_path: Path) -> None:
    with pytest.raises(CloudError, match="fetching gs://vh-orch-test/nope: GCS said 404") as raised:
        store(gcs).get(f"gs://{BUCKET}/nope", tmp_path / "x")
    assert not isinstance(raised.value, (ConfigError, TransientCloudError))
    assert list(tmp_path.iterdir()) == []


def test_download_restarted_from_the_beginning_is_hashed_from_the_beginning(tmp_path: Path) -> None:
    with open(tmp_path / "f", "wb") as fh:
        sink = _HashingSink(fh)
        sink.write(b"compressed bytes that GCS then decided to send decompressed")
        sink.seek(0)
        sink.write(b"plain")
    assert (sink.size, sink.digest.hexdigest()) == (5, hashlib.sha256(b"plain").hexdigest())
    assert (tmp_path / "f").read_bytes() == b"plain"


def test_anonymous_credentials_cannot_sign_without_signing_credentials(gcs) -> None:
    with pytest.raises(ConfigError, match=r"these credentials \(AnonymousCredentials\) cannot sign"):
        store(gcs, signing_credentials=None).plan_upload("f", 1)


def test_application_default_credentials_store_and_sign(gcs, tmp_path: Path, monkeypatch) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(gcs.account.info))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    datastore = GCSDatastore(f"gs://{BUCKET}", endpoint_url=gcs.url, retry_deadline_s=3)
    data = b"through ADC"

    put = datastore.put(write(tmp_path / "a.txt", data), "a.txt")
    result = run_sh(download_script(str(tmp_path / "in"), [("a.txt", datastore.presigned_get(put.uri))]), tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "in" / "a.txt").read_bytes() == data
    assert gcs.proxy.tokens_issued >= 1  # the key file's token endpoint was used
    assert datastore.project == "vh-orch-test"  # from the key file


def test_missing_application_default_credentials_say_what_to_do(gcs, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))

    with pytest.raises(ConfigError, match="no Google credentials found.*GOOGLE_APPLICATION_CREDENTIALS"):
        GCSDatastore(f"gs://{BUCKET}").put(write(tmp_path / "f", b"x"), "f")
    # A gs:// object while the environment's datastore is S3: GCS's defaults, so ADC.
    with pytest.raises(ConfigError, match="no Google credentials found"):
        download_uri(f"gs://{BUCKET}/k/f", tmp_path / "f2", {"uri": "s3://bucket", "endpoint_url": gcs.url})


BAD_SETTINGS = [
    ("gs://", "names no bucket"),
    ("gs:///prefix", "names no bucket"),
    ("gs://Bad_Bucket", "'Bad_Bucket' is not a valid GCS bucket name; use gs://bucket or gs://bucket/prefix"),
    ("gs://ab", "'ab' is not a valid GCS bucket name"),
    ("gs://my-google-data", "is not a valid GCS bucket name"),
    ("gs://192.168.1.1", "is not a valid GCS bucket name"),
    ("gs://bucket/pre?fix", "may not contain '?'"),
    ("ftp://host/x", "'ftp://host/x' is not a file://, s3:// or gs:// URI; accepted: no setting"),
    ({"uri": "gs://bucket", "region": "eu"}, "unknown keys ['region']; accepted:"),
    ({"uri": "gs://bucket", "endpoint_url": "127.0.0.1:9000"}, "must be an http:// or https:// URL"),
    ({"uri": "gs://bucket", "project": "My Project"}, "is not a project ID like my-project-123"),
    ({"uri": "gs://bucket", "credentials": "/root/key.json"}, "vh-orch stores no keys"),
    ({"uri": "gs://bucket", "credentials": "anonymous"}, "'anonymous' only work with an emulator: give its"),
]


@pytest.mark.parametrize(("value", "message"), BAD_SETTINGS, ids=[str(v) for v, _ in BAD_SETTINGS])
def test_bad_gcs_setting_is_refused_with_the_accepted_forms(tmp_path: Path, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as checked:
        validate_datastore_setting(value)
    assert message in str(checked.value)
    with pytest.raises(ConfigError) as built:
        datastore_from_settings(value, tmp_path)
    assert message in str(built.value)


def test_gcs_settings_pick_the_gcs_datastore_without_contacting_anything(tmp_path: Path) -> None:
    plain = datastore_from_settings("gs://bucket/team", tmp_path)  # ADC is looked up on first use only
    assert isinstance(plain, GCSDatastore) and (plain.bucket, plain.prefix, plain.scheme) == ("bucket", "team", "gs")
    tuned = datastore_from_settings({"uri": "gs://bucket", "endpoint_url": "http://127.0.0.1:9",
                                     "project": "my-project", "credentials": "anonymous"}, tmp_path)
    assert isinstance(tuned, GCSDatastore)
    assert (tuned.endpoint_url, tuned.project, tuned.credentials) == ("http://127.0.0.1:9", "my-project", "anonymous")
    validate_datastore_setting({"uri": "gs://a.b-c_d.example", "project": "my-project"})


def test_gs_inputs_are_checked_at_submit_and_fetched(gcs, tmp_path: Path) -> None:
    data = os.urandom(5000)
    uri = store(gcs).put(write(tmp_path / "train.csv", data), "train.csv").uri
    assert normalise_input_url("data", f" {uri} ", lambda _: False) == uri
    for bad in ("gs://", f"gs://{BUCKET}", f"gs://{BUCKET}/", f"gs://{BUCKET}/dir/"):
        with pytest.raises(UserInputError, match="needs a bucket and an object key; .*gs://bucket/key"):
            normalise_input_url("data", bad, lambda _: False)

    settings = {"uri": f"gs://{BUCKET}", "endpoint_url": gcs.url, "credentials": "anonymous"}
    config = fetch_inputs({"data": [uri]}, {}, tmp_path / "inputs", "/valohai/inputs", lambda _: ("", ""),
                          datastore_settings=settings)

    assert config["data"]["files"] == [{
        "name": "train.csv", "path": "/valohai/inputs/data/train.csv", "uri": uri, "size": len(data),
        "checksums": {"sha256": hashlib.sha256(data).hexdigest()}}]
    assert (tmp_path / "inputs" / "data" / "train.csv").read_bytes() == data
    with pytest.raises(InputFetchError, match="input 'data': cannot fetch gs://vh-orch-test/nope/x.csv: .*404"):
        fetch_inputs({"data": [f"gs://{BUCKET}/nope/x.csv"]}, {}, tmp_path / "inputs", "/v", lambda _: ("", ""),
                     datastore_settings=settings)


def test_runner_signs_inputs_of_whichever_object_store_it_has(gcs) -> None:
    gcs_runner = SimpleNamespace(datastore=store(gcs))
    s3_runner = SimpleNamespace(datastore=S3Datastore("s3://bucket", endpoint_url="http://127.0.0.1:9",
                                                      region="eu-west-1"))

    signed = ExecutionRunner._signed_get(gcs_runner, f"gs://{BUCKET}/k/f")  # type: ignore[arg-type]
    assert signed is not None and signed.startswith(f"{gcs.url}/{BUCKET}/k/f?X-Goog-Algorithm=GOOG4-RSA-SHA256")
    assert ExecutionRunner._signed_get(gcs_runner, "s3://bucket/k/f") is None  # type: ignore[arg-type]
    assert ExecutionRunner._signed_get(s3_runner, f"gs://{BUCKET}/k/f") is None  # type: ignore[arg-type]
    assert "X-Amz-Signature=" in ExecutionRunner._signed_get(s3_runner, "s3://bucket/k/f")  # type: ignore[arg-type,operator]
