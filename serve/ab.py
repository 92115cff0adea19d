"""`rayline ab set | start | stop`: change the A/B test of a running app. Every change of the
@challenger alias and of the live split goes through `pipeline.lifecycle.Lifecycle`, which
records who changed what, when and why; this module only knows how to apply a change to the
Serve app (a config deploy with the new ingress user_config, and new args when the variants
change)."""

from __future__ import annotations

from typing import Any, Optional

from pipeline.lifecycle import ALL_CONTROL, Lifecycle, Traffic
from pipeline.spec import Spec
from serve.run import ServeError, deploy_config, deployed_config


def _ingress_user_config(app: dict[str, Any]) -> dict[str, Any]:
    return next((d.get("user_config") for d in app.get("deployments", []) if d["name"] == "ingress"),
                None) or {}


def _with_user_config(app: dict[str, Any], user_config: dict[str, Any]) -> None:
    deployments = [d for d in app.get("deployments", []) if d["name"] != "ingress"]
    ingress = next((d for d in app.get("deployments", []) if d["name"] == "ingress"), {"name": "ingress"})
    app["deployments"] = deployments + [{**ingress, "user_config": user_config}]


def lifecycle_for(spec: Spec, actor: Optional[str] = None) -> Lifecycle:
    from pipeline import registry

    registry.configure_for(spec)
    return Lifecycle(spec.name, spec.experiment_name, actor=actor)


def set_traffic(spec: Spec, treatment_share: Optional[float] = None, mode: Optional[str] = None,
                reason: str = "") -> dict:
    """Change the live split (and/or mode) of the running app: only the ingress' user_config
    changes, so no replica restarts and no request fails."""
    config = deployed_config(spec.name)
    app = config["applications"][0]
    if "treatment" not in app["args"]["variants"] and (treatment_share or 0) > 0:
        raise ServeError("the app has no treatment variant: start one with `rayline ab start`")
    traffic = Traffic.from_user_config(_ingress_user_config(app)).replace(treatment_share, mode)

    def apply(user_config: dict[str, Any]) -> None:
        _with_user_config(app, user_config)
        deploy_config(config)

    lifecycle_for(spec).change_traffic(traffic, apply, reason or "rayline ab set")
    return traffic.to_user_config()


def set_variants(spec: Spec, treatment: Optional[str], share: Optional[float] = None,
                 reason: str = "") -> dict[str, str]:
    """Put a registered version in as treatment (it becomes @challenger), or take the treatment
    out (no @challenger, all traffic to the control)."""
    from pipeline import registry

    config = deployed_config(spec.name)
    app = config["applications"][0]
    variants = dict(app["args"]["variants"])
    lifecycle = lifecycle_for(spec)
    if treatment is None:
        variants.pop("treatment", None)
        lifecycle.end_challenge(reason or "rayline ab stop")
        traffic = ALL_CONTROL
    else:
        version, _ = registry.resolve_version(spec.name, str(treatment))
        if version == variants["control"]:
            raise ServeError(f"version {version} is already the control")
        variants["treatment"] = version
        lifecycle.challenge(version, reason or "rayline ab start")
        traffic = Traffic.from_spec(spec.ab_testing, share)

    def apply(user_config: dict[str, Any]) -> None:
        app["args"]["variants"] = variants
        _with_user_config(app, user_config)
        deploy_config(config)

    lifecycle.change_traffic(traffic, apply, reason or ("rayline ab stop" if treatment is None
                                                        else "rayline ab start"))
    return variants
