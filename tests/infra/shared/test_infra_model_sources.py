"""`services[].modelId` from the hub, a local checkpoint or S3: validated at preview naming the key, pinned to a
revision that moves exactly with the weights, and built with tokens and credentials as BuildKit secrets only.

S3 is a real moto server (boto3 over HTTP via AWS_ENDPOINT_URL_S3), not a patched client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from infra_mocks import DIGEST, REPOSITORY_URL, is_secret
from infra_program import ProgramRun, operated_config, run_program

from infra.config import PROJECT_ROOT, ConfigError, build_config
from infra.model_source import local_digest

SHA = "714eb0fa89d2f80546fda750413ed43d93601a13"
HUB_ID = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
HF_TOKEN = "hf_PrivateRepoToken0123456789abcdef"
BUCKET = "mlapi-models"


def build(raw: dict[str, Any], **kwargs: Any) -> Any:
    return build_config(raw, project="mlapi", stack="dev", region="us-east-1", **kwargs)


def with_service(raw: dict[str, Any], index: int = 0, **change: Any) -> dict[str, Any]:
    services = [dict(s) for s in raw["services"]]
    services[index].update(change)
    for key in [k for k, v in change.items() if v is None]:
        del services[index][key]
    return {**raw, "services": services}


def checkpoint(root: Path, weights: bytes = b"weights-v1") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"architectures": ["DistilBertForSequenceClassification"]}))
    (root / "model.safetensors").write_bytes(weights)
    return root


def without_secrets(value: Any) -> Any:
    """A recorded value with every secret replaced by a marker: what the state holds in plaintext."""
    if is_secret(value):
        return "<secret>"
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


def plaintext(run: ProgramRun) -> str:
    """Every input of every declared resource, and the stack outputs, as the state would show them."""
    return json.dumps([without_secrets(r.inputs) for r in run.resources] + [run.outputs], default=str)


def images(run: ProgramRun) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in run.of_type("docker-build:index:Image")}


# --- hub ids and revisions -------------------------------------------------------------------------------


def test_hub_model_with_a_moving_ref_is_refused_saying_how_to_find_the_sha(dev_raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as err:
        build(with_service(dev_raw, modelRevision="main"))
    assert err.value.key == "mlapi:services[0].modelRevision"
    message = str(err.value)
    assert "'main' is not a commit SHA" in message
    assert f"https://huggingface.co/api/models/{HUB_ID}/revision/main | jq -r .sha" in message


def test_hub_model_without_revision_is_refused_now_that_main_is_no_default(dev_raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"^mlapi:services\[0\]\.modelRevision: is required for a hub model"):
        build(with_service(dev_raw, modelRevision=None))


@pytest.mark.parametrize("model_id", ["distilbert-base-uncased-finetuned-sst-2-english", "org/na me", "org//x",
                                      "s3://Bad_Bucket/prefix", "s3://bucket"])
def test_model_id_that_is_no_source_names_the_three_forms(dev_raw: dict[str, Any], model_id: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(with_service(dev_raw, modelId=model_id))
    assert err.value.key == "mlapi:services[0].modelId"
    assert "s3://BUCKET/PREFIX" in str(err.value)


def test_hub_like_id_that_is_a_project_directory_asks_for_dot_slash(dev_raw: dict[str, Any]) -> None:
    """`infra/shared` could be a hub repo or this project's folder; the user says which with ./."""
    with pytest.raises(ConfigError, match=r"write \./infra/shared for the local checkpoint"):
        build(with_service(dev_raw, modelId="infra/shared"))


# --- local checkpoints -----------------------------------------------------------------------------------


def test_local_checkpoint_resolves_from_the_project_and_pins_a_digest_of_its_files(
    dev_raw: dict[str, Any], tmp_path: Path
) -> None:
    ckpt = checkpoint(tmp_path / "my-ft")
    relative = "./" + os.path.relpath(ckpt, PROJECT_ROOT)
    cwd = os.getcwd()
    os.chdir(PROJECT_ROOT / "infra")  # as the Pulumi CLI runs the program
    try:
        svc = build(with_service(dev_raw, modelId=relative, modelRevision=None)).services[0]
    finally:
        os.chdir(cwd)
    assert (svc.source.kind, svc.source.location) == ("local", str(ckpt))
    assert svc.model_id == relative
    assert svc.model_revision == local_digest(ckpt)


def test_local_digest_moves_with_the_weights_and_only_with_them(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "m")
    before = local_digest(ckpt)
    os.utime(ckpt / "model.safetensors", (1, 1))  # a fresh copy or checkout: new mtimes, same bytes
    assert local_digest(ckpt) == before
    (ckpt / "model.safetensors").write_bytes(b"weights-v2")
    assert local_digest(ckpt) != before
    (ckpt / "model.safetensors").write_bytes(b"weights-v1")
    assert local_digest(ckpt) == before
    (ckpt / "tokenizer.json").write_text("{}")
    assert local_digest(ckpt) != before


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: p / "missing", "is not a directory"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "has no config.json"),
])
def test_local_path_without_a_checkpoint_fails_at_preview(dev_raw: dict[str, Any], tmp_path: Path, make: Any,
                                                          problem: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError, match=rf"^mlapi:services\[0\]\.modelId: .*{problem}"):
        build(with_service(dev_raw, modelId=str(path), modelRevision=None))


def test_local_checkpoint_with_a_revision_is_refused(dev_raw: dict[str, Any], tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "m")
    with pytest.raises(ConfigError, match=r"^mlapi:services\[0\]\.modelRevision: does not apply to a local"):
        build(with_service(dev_raw, modelId=str(ckpt), modelRevision=SHA))


# --- S3, against moto's server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An S3 client on the moto server, with the environment boto3's standard chain reads pointing at it."""
    for key, value in {"AWS_ENDPOINT_URL_S3": moto_endpoint, "AWS_ACCESS_KEY_ID": "AKIAMODELBUILD000001",
                       "AWS_SECRET_ACCESS_KEY": "deploy-secret-key/abc123", "AWS_SESSION_TOKEN": "session-token-xyz",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def upload(client: Any, prefix: str, weights: bytes = b"weights-v1", config: bool = True) -> None:
    if config:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/config.json", Body=b'{"architectures": []}')
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/model.safetensors", Body=weights)


def s3_revision(raw: dict[str, Any], uri: str) -> str:
    return str(build(with_service(raw, modelId=uri, modelRevision=None)).services[0].model_revision)


def test_s3_revision_moves_exactly_when_the_objects_do(dev_raw: dict[str, Any], s3: Any) -> None:
    upload(s3, "models/my-ft")
    uri = f"s3://{BUCKET}/models/my-ft"
    first = s3_revision(dev_raw, uri)
    assert s3_revision(dev_raw, uri + "/") == first
    upload(s3, "models/my-ft")  # same bytes again: same ETags, no rebuild
    assert s3_revision(dev_raw, uri) == first
    upload(s3, "models/my-ft", b"weights-v2")
    second = s3_revision(dev_raw, uri)
    assert second != first
    s3.put_object(Bucket=BUCKET, Key="models/my-ft-other/model.safetensors", Body=b"x")  # a sibling prefix
    assert s3_revision(dev_raw, uri) == second
    svc = build(with_service(dev_raw, modelId=uri, modelRevision=None)).services[0]
    assert (svc.source.kind, svc.source.location) == ("s3", uri)


@pytest.mark.parametrize(("setup", "problem"), [
    (lambda c: None, "holds no objects"),
    (lambda c: upload(c, "models/my-ft", config=False), "has no config.json"),
])
def test_s3_prefix_without_a_checkpoint_fails_at_preview(dev_raw: dict[str, Any], s3: Any, setup: Any,
                                                         problem: str) -> None:
    setup(s3)
    with pytest.raises(ConfigError, match=rf"^mlapi:services\[0\]\.modelId: s3://{BUCKET}/models/my-ft/ {problem}"):
        s3_revision(dev_raw, f"s3://{BUCKET}/models/my-ft")


def test_s3_bucket_that_cannot_be_listed_names_the_key_and_the_permission(dev_raw: dict[str, Any], s3: Any) -> None:
    with pytest.raises(ConfigError) as err:
        s3_revision(dev_raw, "s3://no-such-bucket-here/models/my-ft")
    assert err.value.key == "mlapi:services[0].modelId"
    assert "NoSuchBucket" in str(err.value) and "s3:ListBucket" in str(err.value)


def test_s3_model_with_a_revision_is_refused(dev_raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"^mlapi:services\[0\]\.modelRevision: does not apply to an S3 model"):
        build(with_service(dev_raw, modelId=f"s3://{BUCKET}/m", modelRevision=SHA))


def test_s3_build_gets_the_deploying_credentials_as_secrets_only(s3: Any) -> None:
    upload(s3, "models/my-ft")
    services = json.loads(operated_config("dev")["mlapi:services"])
    services[0].update(modelId=f"s3://{BUCKET}/models/my-ft")
    del services[0]["modelRevision"]
    run = run_program("dev", {"mlapi:services": json.dumps(services)})
    image = images(run)["image-sentiment-image"]
    assert is_secret(image["secrets"])
    assert set(image["secrets"]["value"]) == {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
    assert set(image["ignoreSecretsInDiffCalculation"]) == set(image["secrets"]["value"])
    assert image["buildArgs"]["MODEL_ID"] == f"s3://{BUCKET}/models/my-ft"
    assert image["buildArgs"]["AWS_REGION"] == "us-east-1"
    assert image["buildArgs"]["MODEL_REVISION"] == ""
    # The hub service beside it gets no AWS credentials.
    assert "secrets" not in images(run)["image-semantic-image"]
    state = plaintext(run)
    for value in ("deploy-secret-key/abc123", "session-token-xyz", "AKIAMODELBUILD000001"):
        assert value not in state


# --- the image build under mocks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_with_candidate(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProgramRun, Path, Path]:
    """The dev stack serving a local checkpoint, with a hub candidate on it and a local one on the other service,
    and a private-hub token set as a stack secret."""
    live = checkpoint(tmp_path_factory.mktemp("live") / "my-ft")
    next_ckpt = checkpoint(tmp_path_factory.mktemp("next") / "my-ft-v2", b"weights-v2")
    services = json.loads(operated_config("dev")["mlapi:services"])
    services[0].update(modelId=str(live), candidate={"modelId": HUB_ID, "modelRevision": SHA})
    del services[0]["modelRevision"]
    services[1]["candidate"] = {"modelId": str(next_ckpt)}
    run = run_program("dev", {"mlapi:services": json.dumps(services)}, secrets={"mlapi:hfToken": HF_TOKEN})
    return run, live, next_ckpt


def test_local_checkpoint_is_sent_alone_as_the_model_context(local_with_candidate: Any) -> None:
    run, live, _ = local_with_candidate
    image = images(run)["image-sentiment-image"]
    assert image["context"]["location"] == str(PROJECT_ROOT)
    assert image["context"]["named"] == {"model": {"location": str(live)}}
    assert image["buildArgs"] == {"MODEL_ID": "/model-src", "MODEL_REVISION": "",
                                  "MODEL_FINGERPRINT": local_digest(live)}
    assert image["tags"][0].startswith(f"{REPOSITORY_URL}:sentiment-{local_digest(live)[:24]}-")
    # A local model needs no token: the build gets none.
    assert "secrets" not in image


def test_hub_token_reaches_only_hub_builds_as_a_secret_never_in_plaintext(local_with_candidate: Any) -> None:
    run, _, _ = local_with_candidate
    built = images(run)
    hub_builds = {"image-sentiment-candidate-image", "image-semantic-image"}
    for name, image in built.items():
        if name in hub_builds:
            assert is_secret(image["secrets"]), name
            assert image["secrets"]["value"] == {"hf_token": HF_TOKEN}
            assert image["ignoreSecretsInDiffCalculation"] == ["hf_token"]
        else:
            assert "secrets" not in image, name
        assert HF_TOKEN not in json.dumps(image["buildArgs"])
    assert HF_TOKEN not in plaintext(run)


def test_candidate_gets_its_own_image_and_tag_exported_for_the_platforms(local_with_candidate: Any) -> None:
    run, _, next_ckpt = local_with_candidate
    built = images(run)
    assert set(built) == {"image-sentiment-image", "image-sentiment-candidate-image", "image-semantic-image",
                          "image-semantic-candidate-image"}
    hub_candidate = built["image-sentiment-candidate-image"]
    assert hub_candidate["buildArgs"]["MODEL_ID"] == HUB_ID
    assert hub_candidate["buildArgs"]["MODEL_REVISION"] == SHA
    assert hub_candidate["tags"][0].startswith(f"{REPOSITORY_URL}:sentiment-candidate-{SHA[:24]}-")
    assert hub_candidate["cacheTo"][0]["registry"]["ref"] == f"{REPOSITORY_URL}:sentiment-candidate-buildcache"
    local_candidate = built["image-semantic-candidate-image"]
    assert local_candidate["context"]["named"] == {"model": {"location": str(next_ckpt)}}
    tags = [image["tags"][0] for image in built.values()]
    assert len(set(tags)) == len(tags)
    assert run.outputs["candidateImages"] == {
        "sentiment": f"{hub_candidate['tags'][0]}@{DIGEST}", "semantic": f"{local_candidate['tags'][0]}@{DIGEST}"}
    candidate_urn = next(r.urn for r in run.resources if r.name == "image-sentiment-candidate-image")
    assert candidate_urn.endswith("mlapi:image:ModelImage$docker-build:index:Image::image-sentiment-candidate-image")


def test_stacks_without_a_candidate_export_none(dev: ProgramRun) -> None:
    assert "candidateImages" not in dev.outputs
    assert not [r for r in dev.of_type("docker-build:index:Image") if "candidate" in r.name]


def test_candidate_that_is_the_live_model_is_refused(dev_raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"^mlapi:services\[0\]\.candidate: is the model already live"):
        build(with_service(dev_raw, candidate={"modelId": HUB_ID, "modelRevision": SHA}))


def test_hf_token_in_plain_config_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)
    with pytest.raises(Exception, match=r"mlapi:hfToken: must be a secret.*pulumi config set --secret"):
        run_program("dev", {"mlapi:hfToken": HF_TOKEN})


@pytest.mark.parametrize(("secret_keys", "accepted"), [(["mlapi:hfToken"], True), (["mlapi:other"], False)])
def test_hf_token_secretness_is_read_as_the_language_host_passes_it(
    monkeypatch: pytest.MonkeyPatch, secret_keys: list[str], accepted: bool
) -> None:
    """`pulumi up` hands the program its secret keys in PULUMI_CONFIG_SECRET_KEYS, not through set_all_config."""
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(secret_keys))
    if not accepted:
        with pytest.raises(Exception, match=r"mlapi:hfToken: must be a secret"):
            run_program("fargate", {"mlapi:hfToken": HF_TOKEN})
        return
    image = images(run_program("fargate", {"mlapi:hfToken": HF_TOKEN}))["image-sentiment-image"]
    assert is_secret(image["secrets"]) and image["secrets"]["value"] == {"hf_token": HF_TOKEN}


def test_hf_token_from_the_environment_is_made_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)
    run = run_program("fargate")
    image = images(run)["image-sentiment-image"]
    assert is_secret(image["secrets"]) and image["secrets"]["value"] == {"hf_token": HF_TOKEN}
    assert HF_TOKEN not in plaintext(run)


def test_first_preview_of_a_local_candidate_declares_its_image(tmp_path: Path) -> None:
    """A first `pulumi preview` (every computed value unknown) of the fargate stack with a local candidate."""
    ckpt = checkpoint(tmp_path / "my-ft-v2", b"weights-v2")
    services = json.loads(operated_config("fargate")["mlapi:services"])
    services[0]["candidate"] = {"modelId": str(ckpt)}
    run = run_program("fargate", {"mlapi:services": json.dumps(services)}, preview=True)
    candidate = images(run)["image-sentiment-candidate-image"]
    assert candidate["context"]["named"] == {"model": {"location": str(ckpt)}}
    assert candidate["buildOnPreview"] is False


def test_s3_model_with_an_unknown_aws_profile_names_the_key(dev_raw: dict[str, Any], s3: Any) -> None:
    with pytest.raises(ConfigError, match=r"^mlapi:services\[0\]\.modelId: .*ProfileNotFound.*aws:profile"):
        build(with_service(dev_raw, modelId=f"s3://{BUCKET}/models/my-ft", modelRevision=None),
              aws_profile="no-such-profile")
