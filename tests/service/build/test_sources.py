"""Bake's sources: S3 against moto's real server, the hub through a stand-in endpoint and a local hub cache.

Every bad SOURCE must end `mlapi bake` with exit code 2 and one line on stderr naming the problem, before any
output directory is touched. huggingface.co cannot be reached here, so the hub path is proven offline: through a
stand-in endpoint (HF_ENDPOINT) answering huggingface_hub's requests as the hub does (its errors, a private repo
served only to the token in HF_TOKEN), and from a hub cache in huggingface_hub's own layout.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from mlapi.build.sources import (
    SourceError,
    fetch,
    is_commit_sha,
    one_line,
    parse_source,
    revision_problem,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
LABELS = ["NEGATIVE", "NEUTRAL", "POSITIVE"]


def assert_one_line_failure(result, out: Path | None = None) -> str:  # type: ignore[no-untyped-def]
    """Exit 2, a single `mlapi bake:` line on stderr, no traceback, and no output or staging left behind."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mlapi bake: ")
    assert "Traceback" not in result.stderr
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".bake-")]
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_classifier_writer) -> Path:  # type: ignore[no-untyped-def]
    """A tiny three-label classifier checkpoint, as a user's fine-tune would sit in a folder or a bucket."""
    return tiny_classifier_writer(tmp_path_factory.mktemp("ckpt") / "my-ft", LABELS, seed=3)


# --- the pure rules (shared with the infra program's config validation) ---

def test_only_a_full_lowercase_hex_sha_is_a_commit() -> None:
    assert is_commit_sha(SHA)
    for moving in ("main", "v1.0", SHA[:39], SHA.upper(), SHA + "0", "", None):
        assert not is_commit_sha(moving), moving


def test_a_moving_revision_is_refused_with_how_to_find_the_sha() -> None:
    assert revision_problem("acme/sentiment", SHA) is None
    problem = revision_problem("acme/sentiment", "main")
    assert problem is not None
    assert "'main' is a branch or tag" in problem
    assert "hf models info acme/sentiment --expand sha" in problem
    assert "HfApi().model_info('acme/sentiment').sha" in problem
    assert "Files and versions" in problem
    assert "no revision" in (revision_problem("acme/sentiment", None) or "")


def test_parse_source_tells_the_three_kinds_apart(tmp_path, monkeypatch) -> None:
    s3 = parse_source("s3://models-bucket/teams/nlp/my-ft/", check_disk=False)
    assert (s3.kind, s3.bucket, s3.prefix, s3.uri) == ("s3", "models-bucket", "teams/nlp/my-ft/",
                                                       "s3://models-bucket/teams/nlp/my-ft/")
    assert parse_source("s3://models-bucket", check_disk=False).prefix == ""
    assert parse_source("acme/sentiment", check_disk=False).kind == "hub"
    assert parse_source("distilbert-base-uncased-finetuned-sst-2-english", check_disk=False).kind == "hub"
    for local in ("./models/my-ft", "/opt/ckpt", "../ckpt", "~/ckpt"):
        assert parse_source(local, check_disk=False).kind == "local", local
    # On disk, a folder wins over a hub id that looks the same.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "sentiment").mkdir(parents=True)
    assert parse_source("acme/sentiment").kind == "local"


@pytest.mark.parametrize(("source", "problem"), [
    ("s3://Not_A_Bucket/x", "is not an S3 bucket name"),
    ("https://example.com/model.tar", "only s3:// URIs are fetched"),
    ("acme/too/deep", "not a directory here"),
    ("acme--x/y", "not a directory here"),
])
def test_parse_source_refuses_what_is_none_of_them(source: str, problem: str) -> None:
    with pytest.raises(SourceError, match=problem):
        parse_source(source, check_disk=False)


def test_one_line_collapses_a_library_error() -> None:
    text = "401 Client Error.\n\nRepository Not Found\n  for url"
    assert one_line(text) == "401 Client Error. Repository Not Found for url"


# --- local directories ---

def test_a_missing_directory_is_one_line(tmp_path, run_bake) -> None:
    out = tmp_path / "model"
    line = assert_one_line_failure(run_bake("./no-such-checkpoint", "--out", str(out)), out)
    assert line == "mlapi bake: ./no-such-checkpoint: no such directory"


def test_a_directory_without_config_json_is_one_line(tmp_path, run_bake, checkpoint) -> None:
    outer = tmp_path / "export"
    shutil.copytree(checkpoint, outer / "final")  # the checkpoint one level down, as training scripts often leave it
    out = tmp_path / "model"
    line = assert_one_line_failure(run_bake(str(outer), "--out", str(out)), out)
    assert "no config.json at its top" in line and "one is under final/" in line


def test_a_checkpoint_transformers_cannot_load_is_one_line_and_keeps_the_old_bake(
        tmp_path, run_bake, checkpoint, classifier_dir) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "model.safetensors").unlink()  # config and tokenizer, but no weights
    out = tmp_path / "model"
    shutil.copytree(classifier_dir, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run_bake(str(broken), "--out", str(out))
    line = assert_one_line_failure(result)
    assert "transformers cannot load this checkpoint" in line
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bake-")]


# --- S3, against moto's server ---

def test_bake_from_s3_records_each_object_version_and_etag(s3_upload, tmp_path, moto_server, run_bake,
                                                          checkpoint) -> None:
    s3 = moto_server.client()
    s3.create_bucket(Bucket="team-models")
    s3.put_bucket_versioning(Bucket="team-models", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="team-models", Key="nlp/other-model/config.json", Body=b"{}")  # beside, not under
    put = s3_upload(s3, "team-models", "nlp/my-ft/", checkpoint)

    out = tmp_path / "model"
    result = run_bake("s3://team-models/nlp/my-ft", "--out", str(out), "--onnx-only", env=moto_server.env())
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == "s3://team-models/nlp/my-ft/"
    assert manifest["labels"] == LABELS  # the fine-tune's own labels: these files are what was baked
    origin = manifest["origin"]
    assert origin["kind"] == "s3" and origin["commit"] is None
    recorded = {o["key"]: o for o in origin["objects"]}
    assert set(recorded) == set(put)
    for key, answer in put.items():
        body = (checkpoint / key.removeprefix("nlp/my-ft/")).read_bytes()
        assert recorded[key]["size"] == len(body)
        assert recorded[key]["etag"] == hashlib.md5(body).hexdigest() == answer["ETag"].strip('"')
        assert recorded[key]["version_id"] == answer["VersionId"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bake-")]  # the download went too


@pytest.mark.parametrize("endpoint_variable", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
def test_s3_fetch_of_an_unversioned_bucket_records_etags_and_downloads_the_exact_files(
        s3_upload, tmp_path, moto_server, checkpoint, monkeypatch, endpoint_variable) -> None:
    bucket = f"plain-models-{endpoint_variable.lower().replace('_', '-')}"
    s3 = moto_server.client()
    s3.create_bucket(Bucket=bucket)
    s3_upload(s3, bucket, "ft/", checkpoint)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto_server.env().items():
        if name.startswith("AWS_") and name != "AWS_ENDPOINT_URL_S3":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv(endpoint_variable, moto_server.url)  # boto3's own settings find the server
    fetched = fetch(parse_source(f"s3://{bucket}/ft"), None, tmp_path / "download")
    assert fetched.origin.kind == "s3"
    assert all(o.version_id is None for o in fetched.origin.objects)
    assert sorted(o.key for o in fetched.origin.objects) == sorted(
        f"ft/{p.relative_to(checkpoint).as_posix()}" for p in checkpoint.rglob("*") if p.is_file())
    for path in (p for p in checkpoint.rglob("*") if p.is_file()):
        assert (fetched.path / path.relative_to(checkpoint)).read_bytes() == path.read_bytes()


def test_s3_unknown_bucket_is_one_line(tmp_path, moto_server, run_bake) -> None:
    out = tmp_path / "model"
    line = assert_one_line_failure(run_bake("s3://no-such-bucket/ft", "--out", str(out), env=moto_server.env()), out)
    assert line == "mlapi bake: s3://no-such-bucket/ft/: bucket no-such-bucket does not exist"


def test_s3_empty_prefix_and_a_prefix_without_config_are_one_line(s3_upload, tmp_path, moto_server, run_bake,
                                                                   checkpoint) -> None:
    s3 = moto_server.client()
    s3.create_bucket(Bucket="nested-models")
    s3_upload(s3, "nested-models", "runs/42/final/", checkpoint)
    out = tmp_path / "model"
    empty = assert_one_line_failure(run_bake("s3://nested-models/typo", "--out", str(out), env=moto_server.env()),
                                    out)
    assert "s3://nested-models/typo/: no objects under this prefix" in empty
    nested = assert_one_line_failure(run_bake("s3://nested-models/runs/42", "--out", str(out),
                                              env=moto_server.env()), out)
    assert "no config.json at its top" in nested and "one is under final/" in nested


def test_s3_without_credentials_is_one_line(tmp_path, moto_server, run_bake) -> None:
    env = moto_server.env()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    out = tmp_path / "model"
    line = assert_one_line_failure(run_bake("s3://any-bucket/ft", "--out", str(out), env=env), out)
    assert "s3://any-bucket/ft/: no AWS credentials found" in line and "AWS_PROFILE" in line


def test_s3_unreachable_endpoint_is_one_line(tmp_path, moto_server, run_bake, unused_port) -> None:
    env = moto_server.env(AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{unused_port}", AWS_MAX_ATTEMPTS="1")
    out = tmp_path / "model"
    line = assert_one_line_failure(run_bake("s3://any-bucket/ft", "--out", str(out), env=env), out)
    assert "cannot reach S3" in line and "AWS_ENDPOINT_URL_S3" in line


def test_s3_refused_credentials_and_denied_access_are_one_line(s3_upload, tmp_path, strict_moto_server, run_bake,
                                                               checkpoint) -> None:
    server = strict_moto_server
    s3 = server.client()
    s3.create_bucket(Bucket="locked-models")
    s3_upload(s3, "locked-models", "ft/", checkpoint)
    iam = server.client("iam")
    iam.create_user(UserName="no-s3-rights")
    key = iam.create_access_key(UserName="no-s3-rights")["AccessKey"]
    server.enforce_auth()

    out = tmp_path / "model"
    denied = assert_one_line_failure(run_bake(
        "s3://locked-models/ft", "--out", str(out),
        env=server.env(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])), out)
    assert "s3://locked-models/ft/: access denied (AccessDenied)" in denied
    assert "s3:ListBucket" in denied and key["SecretAccessKey"] not in denied

    unknown = assert_one_line_failure(run_bake(
        "s3://locked-models/ft", "--out", str(out),
        env=server.env(AWS_ACCESS_KEY_ID="AKIANOTAREALKEY00000", AWS_SECRET_ACCESS_KEY="wrong")), out)
    assert "AWS refused the credentials in use (InvalidAccessKeyId" in unknown


# --- the Hugging Face hub, offline ---

def hub_env(fake_hub, **extra: str) -> dict[str, str]:
    return {"HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_ETAG_TIMEOUT": "5", **extra}


def test_hub_repo_not_found_without_a_token_says_to_set_hf_token(tmp_path, fake_hub, run_bake) -> None:
    out = tmp_path / "model"
    line = assert_one_line_failure(run_bake("acme/private-ft", "--out", str(out), env=hub_env(fake_hub)), out)
    assert line == ("mlapi bake: hub model acme/private-ft not found (if it is private, set HF_TOKEN to a token "
                    "that can read it)")
    assert fake_hub.repo_authorizations() and set(fake_hub.repo_authorizations()) == {None}


def test_hub_token_from_hf_token_reaches_the_hub_and_never_the_output(tmp_path, fake_hub, run_bake) -> None:
    token = "hf_" + "k3yThatMustNeverBePrinted"  # noqa: S105 - a made-up token the stand-in hub checks for
    out = tmp_path / "model"
    result = run_bake("acme/private-ft", "--revision", SHA, "--out", str(out), env=hub_env(fake_hub, HF_TOKEN=token))
    line = assert_one_line_failure(result, out)
    assert line == "mlapi bake: hub model acme/private-ft not found, or the token in HF_TOKEN cannot read it"
    assert fake_hub.repo_authorizations() and set(fake_hub.repo_authorizations()) == {f"Bearer {token}"}
    assert any(SHA in path for path in fake_hub.paths)  # the revision asked for is the one looked up
    assert token not in result.stderr + result.stdout


@pytest.mark.parametrize(("status", "code", "message", "expected"), [
    (403, "GatedRepo", "Access to model acme/llm is restricted", "hub model acme/private-ft is gated"),
    (401, None, "Invalid credentials in Authorization header",
     "the hub refused the token in HF_TOKEN for acme/private-ft (401)"),
    (404, "RevisionNotFound", "Invalid rev id: v9", "hub model acme/private-ft has no revision 'v9'"),
    (500, None, "Internal Error", "the Hugging Face hub answered 500 for acme/private-ft at revision v9"),
])
def test_hub_errors_are_one_line(tmp_path, fake_hub, run_bake, status, code, message, expected) -> None:
    fake_hub.status, fake_hub.error_code, fake_hub.error_message = status, code, message
    out = tmp_path / "model"
    result = run_bake("acme/private-ft", "--revision", "v9", "--out", str(out),
                      env=hub_env(fake_hub, HF_TOKEN="hf_someToken"))
    assert expected in assert_one_line_failure(result, out)


def write_hub_cache(hf_home: Path, repo_id: str, ref: str, commit: str, checkpoint: Path) -> None:
    """Lay `checkpoint` out as huggingface_hub's cache holds a downloaded repo: refs/REF naming snapshots/COMMIT."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / ref).write_text(commit)
    shutil.copytree(checkpoint, repo / "snapshots" / commit)


def test_bake_from_the_hub_cache_records_the_commit_its_ref_resolved_to(tmp_path, run_bake, checkpoint) -> None:
    write_hub_cache(tmp_path / "hf-home", "acme/sentiment-ft", "main", SHA, checkpoint)
    out = tmp_path / "model"
    result = run_bake("acme/sentiment-ft", "--revision", "main", "--out", str(out), "--onnx-only", "--no-int8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"hub commit: {SHA}" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["source"], manifest["revision"]) == ("acme/sentiment-ft", "main")
    assert manifest["origin"] == {"kind": "hub", "commit": SHA, "objects": []}
    assert manifest["labels"] == LABELS


def test_bake_of_a_private_hub_repo_sends_hf_token_and_records_the_commit_main_resolved_to(
        tmp_path, fake_hub, run_bake, checkpoint) -> None:
    token = "hf_" + "privateRepoReader"  # noqa: S105 - a made-up token the stand-in hub checks for
    fake_hub.serve("acme/private-ft", SHA, checkpoint, token=token)
    out = tmp_path / "model"
    refused = run_bake("acme/private-ft", "--out", str(out), env=hub_env(fake_hub))
    assert "not found (if it is private, set HF_TOKEN" in assert_one_line_failure(refused, out)

    fake_hub.authorizations.clear(), fake_hub.paths.clear()
    result = run_bake("acme/private-ft", "--out", str(out), "--onnx-only", "--no-int8",
                      env=hub_env(fake_hub, HF_TOKEN=token))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["origin"] == {"kind": "hub", "commit": SHA, "objects": []}
    assert manifest["labels"] == LABELS
    downloads = [path for path in fake_hub.paths if "/resolve/" in path]
    assert f"/acme/private-ft/resolve/{SHA}/model.safetensors" in downloads  # by commit, not by the moving ref
    assert set(fake_hub.repo_authorizations()) == {f"Bearer {token}"}
    assert token not in result.stdout + result.stderr
