"""Every values key the program sets on a Helm release is one the chart reads, at the pinned version.

Helm silently ignores keys a chart does not know, so a misplaced key leaves the release on its defaults with no
error anywhere (istiod's resources under `pilot:` ran istiod at the chart's 500m / 2 GiB). The defaults are the
charts' own values.yaml files, vendored under tests/infra/charts/ from each repository at the pinned tag.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from infra_mocks import plain
from infra_program import REPO, ProgramRun

CHARTS = REPO / "tests" / "infra" / "charts"
# Chart name as the program installs it -> directory under tests/infra/charts.
CHART_DIRS = {"base": "istio-base", "istiod": "istiod", "gateway": "istio-gateway",
              "metrics-server": "metrics-server", "kube-prometheus-stack": "kube-prometheus-stack",
              "external-secrets": "external-secrets", "flagger": "flagger"}
# The Istio charts keep their defaults under this key and read the user's values flat (head of each values.yaml).
ISTIO_DEFAULTS = "_internal_defaults_do_not_set"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def chart_defaults(chart: str, version: str) -> dict[str, Any]:
    """The values a chart reads at `version`: its values.yaml (Istio's defaults lifted to the top level), with
    each vendored sub-chart's own values under its name, overlaid by what the parent sets for it."""
    directory = CHARTS / CHART_DIRS[chart] / version
    defaults = yaml.safe_load((directory / "values.yaml").read_text())
    defaults = _merge(defaults.pop(ISTIO_DEFAULTS, {}), defaults)
    for sub in sorted((directory / "charts").glob("*/values.yaml")) if (directory / "charts").is_dir() else []:
        name = sub.parent.name
        defaults[name] = _merge(yaml.safe_load(sub.read_text()), defaults.get(name) or {})
    return defaults


def unknown_keys(values: dict[str, Any], defaults: Any, path: str = "") -> list[str]:
    """Dotted paths of `values` the chart does not read. A key is known if the defaults have it; below an empty
    map in the defaults (`resources: {}`, `annotations: {}`) any key is the user's to set; lists and scalars are
    values, not further keys."""
    if not isinstance(defaults, dict) or not defaults:
        return []
    found = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in defaults:
            found.append(where)
        elif isinstance(value, dict):
            found += unknown_keys(value, defaults[key], where)
    return found


def _releases(run: ProgramRun) -> list[dict[str, Any]]:
    return [plain(r.inputs) for r in run.of_type("kubernetes:helm.sh/v3:Release")]


def test_every_release_has_vendored_defaults_at_its_version(dev: ProgramRun) -> None:
    for release in _releases(dev):
        path = CHARTS / CHART_DIRS[release["chart"]] / release["version"] / "values.yaml"
        assert path.is_file(), f"{release['name']}: no vendored values.yaml for {release['chart']} {release['version']}"


@pytest.mark.parametrize("overrides", [{}, {"mlapi:certificateArn": "arn:aws:acm:us-east-1:1:certificate/x"}])
def test_every_values_key_the_program_sets_is_read_by_the_chart(overrides: dict[str, str],
                                                                 dev: ProgramRun) -> None:
    from infra_program import run_program

    run = run_program("dev", overrides) if overrides else dev
    for release in _releases(run):
        defaults = chart_defaults(release["chart"], release["version"])
        assert unknown_keys(release.get("values") or {}, defaults) == [], release["name"]


def test_istiod_values_are_flat_and_override_the_chart_defaults(dev: ProgramRun) -> None:
    (istiod,) = [r for r in _releases(dev) if r["chart"] == "istiod"]
    defaults = chart_defaults("istiod", istiod["version"])
    assert defaults["resources"]["requests"] == {"cpu": "500m", "memory": "2048Mi"}
    assert istiod["values"]["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}


def test_the_check_catches_a_key_the_chart_does_not_read() -> None:
    defaults = chart_defaults("istiod", "1.30.3")
    # The layout the program used before: istio-operator's `pilot:` section, which this chart never reads.
    assert unknown_keys({"pilot": {"autoscaleMin": 1, "resources": {}}}, defaults) == ["pilot"]
    assert unknown_keys({"resources": {"requests": {"cpu": "1"}}, "autoscaleMin": 2}, defaults) == []
    gateway = chart_defaults("gateway", "1.30.3")
    assert unknown_keys({"service": {"typo": 1, "annotations": {"any": "x"}}}, gateway) == ["service.typo"]
    stack = chart_defaults("kube-prometheus-stack", "88.5.3")
    assert unknown_keys({"grafana": {"sidecar": {"dashboards": {"searchNamespace": "ALL"}}}}, stack) == []
    assert unknown_keys({"grafana": {"sidecar": {"dashbords": {}}}}, stack) == ["grafana.sidecar.dashbords"]


def test_readme_names_the_source_commit_of_every_vendored_file() -> None:
    readme = (CHARTS / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if line.startswith("| `")}
    vendored = {p.relative_to(CHARTS).as_posix() for p in CHARTS.rglob("values.yaml")}
    assert set(rows) == vendored
    for row in rows.values():
        assert re.search(r"\| [0-9a-f]{40} \|$", row), row
