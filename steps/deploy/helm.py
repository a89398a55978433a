"""The in-cluster rollout: a Helm upgrade of the stellar-api release with the model versions now in production.

The upgrade goes through `helm_python` (Helm's Go SDK as a library, hash-pinned in requirements.lock), so the
deploy image needs no `helm` binary from outside the lock. It inherits the pod's service account
(`stellar-deployer`), whose Role allows exactly the kinds of the stellar-api chart and Helm's release Secrets.

What it does, as `helm upgrade --install --reuse-values --rollback-on-failure --wait=watcher` would:
- upgrade the release, keeping the values its operator installed it with (image, S3 secret, replicas) and setting
  only `models` (the production versions: their checksum on the pod template rolls the pods when one changes);
- install it with the chart's defaults plus `models` when there is no release yet;
- wait until every object is ready (the API's /readyz: every model loaded), and roll back to the previous
  revision when that does not happen within the timeout;
- first roll back a release that an earlier deploy left `pending-*` (its pod killed mid-rollout, so Helm could not
  roll back itself) once that is older than any rollout takes, or uninstall it when that was its first install
  (nothing to roll back to): otherwise every later upgrade, retries included, fails with "another operation
  (install/upgrade/rollback) is in progress".

A Helm failure is a task failure with exit status 1 (`ROLLOUT_FAILED`): Argo's retry expression retries every
status but 2, which is kept for bad arguments (nothing a retry can fix).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from steps.core.logs import get_logger

ROLLOUT_FAILED = 1
WAIT_STRATEGY = "watcher"  # Helm 4's kstatus watcher: waits for readiness of every object the release owns
MAX_HISTORY = 10  # release revisions kept (Secrets in the namespace); older ones are pruned on upgrade
log = get_logger("deploy")


class RolloutError(RuntimeError):
    """The upgrade (or install) failed and Helm rolled it back; the message carries Helm's own."""


@dataclass(frozen=True)
class Rollout:
    """Where the API goes: the release, its namespace, the chart (a path or an oci:// reference), the wait budget."""

    release: str
    namespace: str
    chart: str
    timeout_seconds: int

    def validate(self) -> None:
        """Raise ValueError for a release name or namespace Helm or Kubernetes would refuse (before any call)."""
        import helm_python

        try:
            helm_python.validate_release_name(self.release)
        except helm_python.HelmError as error:
            raise ValueError(f"release name {self.release!r}: {error}") from None
        if not self.namespace or len(self.namespace) > 63 or not _is_dns_label(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a Kubernetes namespace name (a DNS label)")
        if self.timeout_seconds <= 0:
            raise ValueError(f"timeout {self.timeout_seconds}: must be a positive number of seconds")


def _is_dns_label(name: str) -> bool:
    return name[0].isalnum() and name[-1].isalnum() and all(c.islower() or c.isdigit() or c == "-" for c in name)


def release_values(record: dict[str, Any]) -> dict[str, Any]:
    """The values the rollout sets on the stellar-api release: the production version of every model, "" for one
    with none (the chart's "no version"; a null would delete the key, and the chart's schema requires all three)."""
    return {"models": {name: model["version"] or "" for name, model in sorted(record["models"].items())}}


def unservable(record: dict[str, Any]) -> list[str]:
    """Models with no production version: the API serves the others (with none at all, there is nothing to roll)."""
    return sorted(name for name, model in record["models"].items() if not model["version"])


def default_config(namespace: str) -> Any:
    """A Helm client for the cluster this process runs in (KUBECONFIG, ~/.kube/config, else the pod's account)."""
    import helm_python

    return helm_python.Config(namespace=namespace)


def upgrade(rollout: Rollout, values: dict[str, Any],
            config_factory: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Upgrade (or first install) the release with `values`, atomically; returns what Helm reports (release,
    namespace, revision, status). Raises RolloutError with Helm's message when it fails."""
    import helm_python

    options = dict(namespace=rollout.namespace, timeout=rollout.timeout_seconds, wait=WAIT_STRATEGY,
                   rollback_on_failure=True, description="stellar-pipeline deploy-api: production model versions")
    log.info("helm upgrade %s (chart %s, namespace %s, wait up to %d s) with %s", rollout.release, rollout.chart,
             rollout.namespace, rollout.timeout_seconds, values)
    try:
        with (config_factory or default_config)(rollout.namespace) as config:
            last = _last_revision(config, rollout.release)
            if last is not None and _recover_interrupted(config, rollout, last):
                release = config.upgrade(rollout.chart, rollout.release, values, reuse_values=True,
                                         max_history=MAX_HISTORY, **options)
            else:
                log.info("no release %s in namespace %s yet: installing it", rollout.release, rollout.namespace)
                release = config.install(rollout.chart, rollout.release, values, **options)
    except helm_python.HelmError as error:
        raise RolloutError(f"helm upgrade of release {rollout.release!r} in namespace {rollout.namespace!r} "
                           f"failed: {error}") from None
    return {"release": release.get("name", rollout.release), "namespace": release.get("namespace", rollout.namespace),
            "revision": release.get("revision"), "status": release.get("status")}


def _last_revision(config: Any, release: str) -> dict[str, Any] | None:
    """The summary of the release's newest revision (name, revision, status, deployed_at; Helm's `status`, which
    takes the highest revision: `history` lists them in storage order and ignores its `max`), None when there is no
    release (Helm's own test before `upgrade --install` chooses to install)."""
    import helm_python

    try:
        return config.status(release)
    except helm_python.HelmNotFoundError:
        return None


def _recover_interrupted(config: Any, rollout: Rollout, last: dict[str, Any]) -> bool:
    """Clear a newest revision left `pending-*` for longer than a rollout takes (an upgrade's wait and its
    rollback's, and a minute): roll it back to the revision before, or uninstall a first install that never finished
    (there is none before). True when the release is there to upgrade, False when it is to be installed. A younger
    pending revision may be another deploy's, still going: RolloutError (retried)."""
    status = str(last.get("status") or "")
    if not status.startswith("pending"):
        return True
    what = f"release {rollout.release!r} revision {last.get('revision')} is {status}"
    since = _helm_time(str(last.get("deployed_at") or ""))
    if since is None:
        raise RolloutError(f"{what}, since an unknown time; if no deploy is running, roll it back: helm rollback "
                           f"{rollout.release} --namespace {rollout.namespace}")
    age = time.time() - since
    if age < 2 * rollout.timeout_seconds + 60:
        raise RolloutError(f"{what}, for {age:.0f} s: another rollout may still be going; not touched")
    if status == "pending-install":
        log.warning("%s, for %.0f s: left by a first install that did not finish; uninstalling it", what, age)
        config.uninstall(rollout.release, timeout=rollout.timeout_seconds, wait=WAIT_STRATEGY)
        return False
    log.warning("%s, for %.0f s: left by a deploy that did not finish; rolling back to the revision before",
                what, age)
    config.rollback(rollout.release, timeout=rollout.timeout_seconds, wait=WAIT_STRATEGY)
    return True


def _helm_time(text: str) -> float | None:
    """Seconds since the epoch of a Helm release time (RFC 3339, nanoseconds), None when it is not one."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
