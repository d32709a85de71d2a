"""The README's quickstart runs as written: every `make` target and variable, `mlapi` command and flag, stack file,
stack output and service entry it shows is one the code accepts."""

from __future__ import annotations

import re
import shlex
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# `infra` is the Pulumi program's package at the project root, not part of the installed distribution.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
README = (ROOT / "README.md").read_text()
QUICKSTART = README.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
MAKEFILE = (ROOT / "Makefile").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", QUICKSTART, flags=re.M | re.S)


def _commands() -> list[list[str]]:
    commands = []
    for block in _blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _split_assignments(words: list[str]) -> tuple[dict[str, str], list[str]]:
    assignments = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, _, value = words[0].partition("=")
        assignments[name] = value
        words = words[1:]
    return assignments, words


def test_quickstart_has_the_local_and_the_aws_path() -> None:
    programs = [_split_assignments(words)[1][0] for words in _commands()]
    assert "make" in programs and "pulumi" in programs and "curl" in programs
    assert any(p.endswith("mlapi") for p in programs)


def test_quickstart_make_targets_and_variables_exist() -> None:
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", MAKEFILE, flags=re.M))
    variables = set(re.findall(r"^([A-Z_]+) *[?:]?=", MAKEFILE, flags=re.M))
    seen = 0
    for words in _commands():
        assignments, rest = _split_assignments(words)
        if rest[0] != "make":
            continue
        seen += 1
        assert set(assignments) <= variables, assignments
        assert [w for w in rest[1:] if not w.startswith("-") and "=" not in w] and \
            all(w in targets for w in rest[1:] if not w.startswith("-") and "=" not in w), rest
    assert seen


def test_quickstart_mlapi_commands_parse_with_the_cli() -> None:
    from mlapi.cli import build_parser

    seen = 0
    for words in _commands():
        _, rest = _split_assignments(words)
        if not rest[0].endswith("mlapi"):
            continue
        seen += 1
        try:
            build_parser().parse_args(rest[1:])
        except SystemExit:
            pytest.fail(f"`{shlex.join(rest)}` is not accepted by mlapi's parser")
    assert seen >= 2


def test_quickstart_service_entry_is_valid_config_and_its_name_is_the_url_key() -> None:
    from infra.config import _service

    (block,) = _blocks("yaml")
    services = yaml.safe_load(block)["mlapi:services"]
    assert len(services) == 1
    service = _service(0, services[0])
    assert f"jq -r .{service.name})" in QUICKSTART


def test_quickstart_stacks_and_stack_outputs_exist() -> None:
    stacks = re.findall(r"pulumi stack (?:init|select) (\S+)", QUICKSTART)
    assert stacks
    outputs = set(re.findall(r"pulumi stack output (\w+)", QUICKSTART))
    assert outputs
    for stack in stacks:
        assert f"Pulumi.{stack}.yaml" in QUICKSTART  # the file the quickstart edits is the stack it creates
        platform = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]["mlapi:platform"]
        program = (ROOT / "infra" / platform / "platform.py").read_text()
        assert all(f'"{name}":' in program for name in outputs), (platform, outputs)
    # The ECS service the quickstart restarts is the one its service entry declares.
    (block,) = _blocks("yaml")
    names = {service["name"] for service in yaml.safe_load(block)["mlapi:services"]}
    restarted = set(re.findall(r"aws ecs update-service .*--service (\S+)", QUICKSTART))
    assert restarted <= names


def test_deploy_your_own_model_entry_is_valid_config_with_a_local_candidate(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    """The README's candidate entry parses as the stack parses it, with the checkpoint folder it names in place."""
    import infra.config
    from infra.config import _service

    section = README.split("\n## Deploy your own model\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"^ *```yaml\n(.*?)^ *```", section, flags=re.M | re.S)
    (entry,) = yaml.safe_load(textwrap.dedent(block))["mlapi:services"]
    checkpoint = tmp_path / entry["candidate"]["modelId"]
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    monkeypatch.setattr(infra.config, "PROJECT_ROOT", tmp_path)
    service = _service(0, entry)
    assert service.candidate is not None and service.candidate.source.kind == "local"
    assert service.source.kind == "hub" and service.model_revision == entry["modelRevision"]
