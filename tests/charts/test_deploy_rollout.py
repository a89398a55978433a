"""The deploy task's in-cluster path (`--target helm`), without a cluster: the release and namespace it targets,
the values it applies (rendered through the real stellar-api chart), the exact Helm calls, and its failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rendering import API_CHART, one, render
from steps.core.artifacts import ArtifactWriter
from steps.core.registry import PRODUCTION, ModelRegistry
from steps.deploy.__main__ import main as deploy

NAMES = ("spectral", "lightcurve", "sed")
VERSIONS = {"spectral": "2", "lightcurve": "1", "sed": "3"}


def after_promotion(tmp_path: Path, refused: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """(registry, promotion dir) as after a promotion: every model registered up to its version in VERSIONS, and that
    version production unless the model is one the gates `refused` (with no production version before)."""
    registry_dir, promotion = tmp_path / "registry", tmp_path / "promotion"
    registry = ModelRegistry.open(str(registry_dir))
    for name in NAMES:
        for number in range(int(VERSIONS[name])):
            with ArtifactWriter(tmp_path / f"{name}-{number}", stage="train", parameters={"n": number}) as out:
                out.write_json("model.json", {"name": name, "n": number})
            record = registry.register(name, tmp_path / f"{name}-{number}")
        if name not in refused:
            registry.set_alias(name, PRODUCTION, record.version)
    with ArtifactWriter(promotion, stage="promote") as out:
        out.write_json("promotion.json", {name: {"outcome": "refused" if name in refused else "promoted",
                                                 "version": VERSIONS[name]} for name in NAMES})
    return registry_dir, promotion


@pytest.fixture
def promoted(tmp_path) -> tuple[Path, Path]:
    """Every model with a production version (VERSIONS)."""
    return after_promotion(tmp_path)


class FakeHelm:
    """Stands in for helm_python.Config: records every call, answers with the library's release summaries (their
    keys are checked against the real library's in `test_the_stand_in_answers_as_the_helm_library_does`)."""

    calls: list[tuple[str, tuple, dict]] = []
    installed = True
    failure: Exception | None = None
    last: dict = {}  # the newest revision's status and deployed_at, where a test sets them

    def __init__(self, namespace: str):
        self.calls.append(("config", (namespace,), {}))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.calls.append(("close", (), {}))

    def status(self, name, **options):
        import helm_python

        self.calls.append(("status", (name,), options))
        if not self.installed:
            raise helm_python.HelmNotFoundError(f"release: not found: {name}")
        return summary(name, "stellar", 4, "deployed", "2026-01-01T00:00:00Z") | self.last

    def rollback(self, name, **options):
        self.calls.append(("rollback", (name,), options))

    def uninstall(self, name, **options):
        self.calls.append(("uninstall", (name,), options))
        FakeHelm.installed = False
        return {"info": "", "release": summary(name, "stellar", 1, "uninstalled", "2026-01-01T00:00:00Z")}

    def _release(self, action, chart, name, values, options):
        self.calls.append((action, (chart, name, values), options))
        if self.failure is not None:
            raise self.failure
        return summary(name, options["namespace"], 5 if self.installed else 1, "deployed", "2026-11-30T06:45:57Z")

    def upgrade(self, chart, name, values=None, **options):
        return self._release("upgrade", chart, name, values, options)

    def install(self, chart, name, values=None, **options):
        return self._release("install", chart, name, values, options)


def summary(name: str, namespace: str, revision: int, status: str, deployed_at: str) -> dict:
    """A release summary as helm_python returns it (flat: not the `version`/`info` of Helm's stored release)."""
    return {"name": name, "namespace": namespace, "revision": revision, "status": status, "notes": "",
            "deployed_at": deployed_at, "chart_name": "stellar-api", "chart_version": "0.1.0",
            "app_version": "0.1.0", "manifest": "---\n..."}


@pytest.fixture
def fake_helm(monkeypatch, helm):
    FakeHelm.calls, FakeHelm.installed, FakeHelm.failure, FakeHelm.last = [], True, None, {}
    monkeypatch.setattr("steps.deploy.helm.default_config", FakeHelm)
    return FakeHelm


def run_deploy(registry: Path, promotion: Path, out: Path, *extra: str) -> int:
    return deploy(["--promotion", str(promotion), "--registry", str(registry), "--out", str(out),
                   "--target", "helm", "--namespace", "stellar", "--chart", str(API_CHART), *extra])


def test_upgrades_the_release_atomically_with_the_production_versions(promoted, fake_helm, tmp_path):
    registry, promotion = promoted
    assert run_deploy(registry, promotion, tmp_path / "out", "--timeout", "300") == 0
    expected_values = {"models": VERSIONS}
    assert fake_helm.calls == [
        ("config", ("stellar",), {}),
        ("status", ("stellar-api",), {}),
        ("upgrade", (str(API_CHART), "stellar-api", expected_values),
         {"namespace": "stellar", "timeout": 300, "wait": "watcher", "rollback_on_failure": True,
          "reuse_values": True, "max_history": 10,
          "description": "stellar-pipeline deploy-api: production model versions"}),
        ("close", (), {}),
    ]
    deployment = json.loads((tmp_path / "out" / "deployment.json").read_text())
    assert deployment["rollout"] == {"target": "helm", "chart": str(API_CHART), "values": expected_values,
                                     "release": "stellar-api", "namespace": "stellar", "revision": 5,
                                     "status": "deployed"}
    serving = json.loads((registry / "serving.json").read_text())  # the local path's record is written too
    assert {name: model["version"] for name, model in serving["models"].items()} == VERSIONS


def test_installs_the_release_when_there_is_none(promoted, fake_helm, tmp_path):
    fake_helm.installed = False
    assert run_deploy(*promoted, tmp_path / "out", "--release", "api") == 0
    [install] = [call for call in fake_helm.calls if call[0] in ("install", "upgrade")]
    assert install[0] == "install" and install[1] == (str(API_CHART), "api", {"models": VERSIONS})
    assert install[2]["rollback_on_failure"] is True and install[2]["wait"] == "watcher"


def test_a_release_left_pending_by_a_killed_deploy_is_rolled_back_before_the_upgrade(promoted, fake_helm, tmp_path):
    """A deploy pod killed mid-rollout leaves the release pending-upgrade, which Helm never rolls back itself: every
    later upgrade failed with "another operation is in progress". Older than a rollout takes, it is rolled back."""
    fake_helm.last = {"status": "pending-upgrade", "deployed_at": "2026-01-01T00:00:00.123456789Z"}
    assert run_deploy(*promoted, tmp_path / "out", "--timeout", "300") == 0
    actions = [call[0] for call in fake_helm.calls]
    assert actions == ["config", "status", "rollback", "upgrade", "close"]
    assert fake_helm.calls[2] == ("rollback", ("stellar-api",), {"timeout": 300, "wait": "watcher"})


def test_a_first_install_left_pending_is_uninstalled_and_installed_again(promoted, fake_helm, tmp_path, caplog):
    """A pending-install has no revision before it to roll back to: Helm's rollback would fail on every retry."""
    fake_helm.last = {"revision": 1, "status": "pending-install", "deployed_at": "2026-01-01T00:00:00Z"}
    assert run_deploy(*promoted, tmp_path / "out", "--timeout", "300") == 0
    assert [call[0] for call in fake_helm.calls] == ["config", "status", "uninstall", "install", "close"]
    assert "revision 1 is pending-install" in caplog.text and "uninstalling it" in caplog.text
    rollout = json.loads((tmp_path / "out" / "deployment.json").read_text())["rollout"]
    assert (rollout["revision"], rollout["status"]) == (1, "deployed")


def test_a_release_pending_for_less_than_a_rollout_takes_is_left_to_its_deploy(promoted, fake_helm, tmp_path,
                                                                             caplog):
    from datetime import datetime, timezone

    fake_helm.last = {"status": "pending-upgrade",
                      "deployed_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
    assert run_deploy(*promoted, tmp_path / "out", "--timeout", "300") == 1  # retried, not a bad input
    assert [call[0] for call in fake_helm.calls] == ["config", "status", "close"]
    assert "revision 4 is pending-upgrade, for " in caplog.text
    assert "s: another rollout may still be going; not touched" in caplog.text


def test_a_failed_rollout_fails_the_task_with_helms_message_and_a_retryable_status(promoted, fake_helm, tmp_path,
                                                                                  caplog, helm):
    fake_helm.failure = helm.HelmReleaseError("context deadline exceeded: resource Deployment/stellar/stellar-api "
                                              "not ready; rolled back to revision 4")
    status = run_deploy(*promoted, tmp_path / "out")
    assert status == 1  # not 2: the template's retry expression retries every status but 2
    assert "not ready; rolled back to revision 4" in caplog.text
    assert not (tmp_path / "out").exists()  # no output artifact: the task did not complete


def test_an_unreachable_cluster_fails_through_the_real_helm_library(promoted, monkeypatch, tmp_path, caplog, helm):
    """No fake: helm_python itself, against a kubeconfig whose API server refuses connections on loopback. (The
    kubeconfig is passed by path: the Go library read its environment when it was loaded.)"""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "nobody", "user": {"token": "none"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}]}))
    monkeypatch.setattr("steps.deploy.helm.default_config",
                        lambda namespace: helm.Config(kubeconfig_path=kubeconfig, namespace=namespace))
    assert run_deploy(*promoted, tmp_path / "out", "--timeout", "5") == 1
    assert "cluster unreachable" in caplog.text and "127.0.0.1:1" in caplog.text


def test_a_model_without_a_production_version_does_not_hold_back_the_others(promoted, fake_helm, tmp_path):
    """The API serves the models that have a production version (it is ready without the others), so the rollout
    goes ahead; it used to be skipped, and a model the gates refused kept the other two from reaching the API."""
    registry, promotion = promoted
    outcomes = json.loads((promotion / "promotion.json").read_text())
    outcomes["orbit"] = {"outcome": "refused", "version": "1"}  # a model that never reached production
    (promotion / "promotion.json").write_text(json.dumps(outcomes))
    assert run_deploy(registry, promotion, tmp_path / "out") == 0
    assert [call[0] for call in fake_helm.calls] == ["config", "status", "upgrade", "close"]


def test_no_rollout_while_no_model_has_a_production_version(tmp_path, fake_helm):
    registry = tmp_path / "registry"
    ModelRegistry.open(str(registry))
    with ArtifactWriter(tmp_path / "promotion", stage="promote") as out:
        out.write_json("promotion.json", {name: {"outcome": "refused", "version": "1"} for name in NAMES})
    assert run_deploy(registry, tmp_path / "promotion", tmp_path / "out") == 0
    assert fake_helm.calls == []
    rollout = json.loads((tmp_path / "out" / "deployment.json").read_text())["rollout"]
    assert rollout == {"target": "helm", "skipped": "no production version of lightcurve, sed, spectral"}


@pytest.mark.parametrize("extra, message", [
    (["--release", "Stellar_API"], "release name"),
    (["--namespace", "Not A Namespace"], "namespace"),
    (["--timeout", "0"], "timeout"),
])
def test_bad_arguments_exit_2_before_touching_anything(promoted, fake_helm, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        run_deploy(*promoted, tmp_path / "out", *extra)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert fake_helm.calls == [] and not (promoted[0] / "serving.json").exists()


def test_helm_target_needs_a_namespace_and_a_chart(promoted, tmp_path, capsys):
    registry, promotion = promoted
    with pytest.raises(SystemExit) as exit_info:
        deploy(["--promotion", str(promotion), "--registry", str(registry), "--out", str(tmp_path / "o"),
                "--target", "helm"])
    assert exit_info.value.code == 2 and "--namespace and --chart" in capsys.readouterr().err


def test_the_values_it_applies_render_the_real_chart_and_roll_the_pods(helm):
    """What the rollout sets passes the chart's schema, and a new version changes the pods' checksum."""
    from steps.deploy.helm import release_values

    def pod_annotations(versions):
        record = {"models": {name: {"version": version} for name, version in versions.items()}}
        deployment = one(render(API_CHART, release_values(record), release="stellar-api"), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]

    before = pod_annotations(VERSIONS)
    after = pod_annotations({**VERSIONS, "sed": "4"})
    assert before["checksum/models"] != after["checksum/models"]
    assert json.loads(after["stellar.dev/models"]) == {**VERSIONS, "sed": "4"}


def test_a_model_with_no_production_version_is_rolled_out_as_none_and_the_chart_takes_it(fake_helm, tmp_path, helm):
    """The first rollout after the gates refused one model (no baseline to promote either): its version was sent as
    null, which Helm takes as "delete the key", and the chart's schema (all three models required) refused the
    values on every retry, so the two promoted models never reached the cluster."""
    assert run_deploy(*after_promotion(tmp_path, refused=("sed",)), tmp_path / "out") == 0
    [upgrade] = [call for call in fake_helm.calls if call[0] == "upgrade"]
    values = upgrade[1][2]
    assert values == {"models": {**VERSIONS, "sed": ""}}
    deployment = one(render(API_CHART, values, release="stellar-api"), "Deployment")
    assert json.loads(deployment["spec"]["template"]["metadata"]["annotations"]["stellar.dev/models"])["sed"] == ""


def test_the_stand_in_answers_as_the_helm_library_does(helm):
    """The real library's release summary (a client-side dry run of the real chart, no cluster) has every key the
    stand-in answers with, and the rollout reads no other."""
    with helm.Config(namespace="stellar", storage_driver="memory") as config:
        real = config.install(str(API_CHART), "stellar-api", {"models": VERSIONS}, dry_run="client")
    stand_in = summary("stellar-api", "stellar", 1, "pending-install", "2026-11-30T06:45:57Z")
    assert set(stand_in) <= set(real)
    assert {key: type(value) for key, value in stand_in.items()} == {key: type(real[key]) for key in stand_in}
    from steps.deploy.helm import _helm_time
    assert _helm_time(real["deployed_at"]) is not None
