"""The program as the Pulumi CLI really runs it: from infra/ as working directory, preview before update.

These are the defects mocks hid while the tests ran from the repository root and only in update mode: relative
build paths (docker-build's Check resolves them against infra/), an image tag hashing an empty tree or a part of
the context, and values used before they are known.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from infra_mocks import plain
from infra_program import PROGRAM_DIR, REPO, ProgramRun

from infra.shared.image import context_files, context_hash


def _images(run: ProgramRun) -> list[dict]:
    return [plain(r.inputs) for r in run.of_type("docker-build:index:Image")]


@pytest.mark.parametrize("stack", ["dev", "fargate", "dev_preview", "fargate_preview"])
def test_build_paths_resolve_from_infra_working_directory(stack: str, request: pytest.FixtureRequest) -> None:
    # docker-build's Check runs on preview too: a Dockerfile it cannot open fails the first `pulumi preview`.
    run: ProgramRun = request.getfixturevalue(stack)
    images = _images(run)
    assert images
    for image in images:
        # What docker-build's Check does, with the plugin's working directory = infra/.
        context = Path(PROGRAM_DIR, image["context"]["location"])
        dockerfile = Path(PROGRAM_DIR, image["dockerfile"]["location"])
        assert Path(image["context"]["location"]).is_absolute()
        assert context.resolve() == REPO
        assert dockerfile.resolve() == REPO / "Dockerfile" and dockerfile.is_file()


def test_image_tag_hashes_the_real_context_not_an_empty_tree(dev: ProgramRun, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    empty = context_hash(tmp_path, tmp_path / "Dockerfile")
    real = context_hash(REPO, REPO / "Dockerfile")
    for image in _images(dev):
        tag = image["tags"][0].rsplit(":", 1)[1]
        assert tag.endswith("-" + real)
        assert not tag.endswith("-" + empty)


def _context(root: Path) -> Path:
    (root / "service" / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /src\n")
    (root / ".dockerignore").write_text("# allow-list\n*\n!pyproject.toml\n!README.md\n!service/\n**/__pycache__\n")
    (root / "README.md").write_text("readme\n")
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "service" / "pkg" / "app.py").write_text("x = 1\n")
    (root / "service" / "pkg" / "data.json").write_text("{}\n")
    (root / "tests" / "test_x.py").write_text("def test(): pass\n")
    (root / "notes.txt").write_text("notes\n")
    return root


@pytest.mark.parametrize(
    ("path", "changes_tag"),
    [
        ("README.md", True),
        ("pyproject.toml", True),
        ("service/pkg/app.py", True),
        ("service/pkg/data.json", True),  # not *.py, but docker sends it and the image copies it
        ("service/pkg/new_module.py", True),
        ("Dockerfile", True),
        ("tests/test_x.py", False),
        ("notes.txt", False),
        ("service/pkg/__pycache__/app.cpython-311.pyc", False),
    ],
)
def test_tag_changes_exactly_when_docker_sends_a_changed_file(tmp_path: Path, path: str, changes_tag: bool) -> None:
    root = _context(tmp_path)
    before = context_hash(root, root / "Dockerfile")
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text((target.read_text() if target.exists() else "") + "# changed\n")
    assert (context_hash(root, root / "Dockerfile") != before) is changes_tag


def test_tag_changes_when_a_sent_file_changes_mode(tmp_path: Path) -> None:
    # The image keeps each file's mode; the same tag for two different images is what ECR's immutability refuses.
    root = _context(tmp_path)
    before = context_hash(root, root / "Dockerfile")
    app = root / "service/pkg/app.py"
    mode = app.stat().st_mode & 0o777
    app.chmod(mode | 0o111)
    assert context_hash(root, root / "Dockerfile") != before
    app.chmod(mode)
    assert context_hash(root, root / "Dockerfile") == before
    (root / "notes.txt").chmod(0o600)  # ignored by .dockerignore: never sent, never changes the tag
    assert context_hash(root, root / "Dockerfile") == before


def test_tag_follows_a_symlink_as_docker_sends_it_and_ignores_mtimes(tmp_path: Path) -> None:
    root = _context(tmp_path)
    before = context_hash(root, root / "Dockerfile")
    os.utime(root / "service/pkg/app.py", (0, 0))  # a fresh clone: new mtimes, same image
    assert context_hash(root, root / "Dockerfile") == before
    (root / "service/pkg/link.py").symlink_to("app.py")
    linked = context_hash(root, root / "Dockerfile")
    assert linked != before
    (root / "service/pkg/link.py").unlink()
    (root / "service/pkg/link.py").symlink_to("data.json")
    assert context_hash(root, root / "Dockerfile") not in (before, linked)


def test_context_files_of_the_repository_follow_its_dockerignore() -> None:
    sent = {p.relative_to(REPO).as_posix() for p in context_files(REPO)}
    assert {"README.md", "pyproject.toml", "service/mlapi/api/app.py"} <= sent
    assert not [p for p in sent if p.startswith(("tests/", "infra/", ".git/", ".venv")) or "__pycache__" in p]


def test_program_runs_with_infra_as_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Whatever directory the tests start from, the program sees infra/ and declares the same build paths.
    from infra_program import run_program

    monkeypatch.chdir(tmp_path)
    run = run_program("fargate")
    assert os.getcwd() == str(tmp_path)
    assert {i["context"]["location"] for i in _images(run)} == {str(REPO)}


@pytest.mark.parametrize("stack", ["dev", "fargate"])
def test_preview_declares_the_same_resources_as_update(stack: str, request: pytest.FixtureRequest) -> None:
    update: ProgramRun = request.getfixturevalue(stack)
    preview: ProgramRun = request.getfixturevalue(f"{stack}_preview")
    assert preview.preview and not update.preview
    assert sorted((r.typ, r.name) for r in preview.resources) == sorted((r.typ, r.name) for r in update.resources)
    # Outputs built from computed values stay unknown: the exported map never resolves during a first preview.
    assert "service_urls" not in preview.outputs


@pytest.mark.parametrize("stack", ["dev_preview", "fargate_preview"])
def test_preview_never_renders_an_unknown_value_into_a_string(stack: str, request: pytest.FixtureRequest) -> None:
    run: ProgramRun = request.getfixturevalue(stack)
    for res in run.resources:
        text = json.dumps(plain(res.inputs), default=lambda value: "<unknown>")
        assert "Output[" not in text and "Calling __str__" not in text, res.name
        # The gateway chart's own word for "no Service" is the only "None" a value may hold.
        assert "None" not in text.replace('"service": {"type": "None"}', ""), res.name


@pytest.mark.parametrize("stack", ["dev_preview", "fargate_preview"])
def test_preview_builds_no_image(stack: str, request: pytest.FixtureRequest) -> None:
    run: ProgramRun = request.getfixturevalue(stack)
    assert all(image["buildOnPreview"] is False for image in _images(run))
