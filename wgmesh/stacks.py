"""Terraform stacks: what a stack declares, and the root module wgmesh writes for an inventory. Pure
(except reading the stack's own files).

Two layouts:

- single (the default, e.g. terraform/lab): the root calls the stack once with the --var values
  and re-exports its outputs.
- per-region (declared in the stack's wgmesh-stack.json, e.g. terraform/aws): Terraform cannot
  loop over providers, so the root gets one aliased provider block per chosen region and one
  call of the stack per region, each handed its own provider, its index, the region list and
  the other regions' outputs it needs (e.g. the other gateways' public addresses); the root's
  `peers` is the merge of every region's `peers`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from wgmesh.errors import BadInput

MANIFEST = "wgmesh-stack.json"
_VAR_RE = re.compile(r'^\s*variable\s+"([A-Za-z0-9_-]+)"', re.M)
_OUT_RE = re.compile(r'^\s*output\s+"([A-Za-z0-9_-]+)"', re.M)
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")

# A value as JSON (and so Terraform JSON) holds it.
Json: TypeAlias = "str | int | float | bool | None | list[Json] | dict[str, Json]"


@dataclass(frozen=True)
class Stack:
    name: str
    directory: Path
    variables: frozenset[str]
    outputs: frozenset[str]
    layout: str = "single"
    provider: str = ""
    provider_source: str = ""
    regions_var: str = "regions"
    cross: dict[str, str] = field(default_factory=dict)  # module input → the output of every OTHER region it gets
    merge_outputs: tuple[str, ...] = ("peers",)
    set_by_wgmesh: tuple[str, ...] = ()


def load_stack(stacks_dir: Path, name: str) -> Stack:
    directory = stacks_dir / name
    if not directory.is_dir() or not list(directory.glob("*.tf")):
        have = (
            sorted(p.name for p in stacks_dir.iterdir() if p.is_dir() and list(p.glob("*.tf")))
            if stacks_dir.is_dir()
            else []
        )
        raise BadInput("--stack", name, f"no such stack in {stacks_dir}", hint="stacks: " + ", ".join(have))
    variables: set[str] = set()
    outputs: set[str] = set()
    for f in sorted(directory.glob("*.tf")):
        text = f.read_text()
        variables.update(_VAR_RE.findall(text))
        outputs.update(_OUT_RE.findall(text))
    manifest: dict[str, Any] = {}  # the stack's own JSON, as read
    if (directory / MANIFEST).exists():
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
        except ValueError as exc:
            raise BadInput("--stack", name, f"{MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BadInput("--stack", name, f"{MANIFEST} must be a JSON object")
    layout = manifest.get("layout", "single")
    if layout not in ("single", "per-region"):
        raise BadInput("--stack", name, f"{MANIFEST}: unknown layout {layout!r}")
    if layout == "per-region" and not manifest.get("provider"):
        raise BadInput("--stack", name, f"{MANIFEST}: a per-region stack must name its provider")
    if layout == "per-region":
        return Stack(
            name, directory, frozenset(variables), frozenset(outputs), layout,
            provider=manifest["provider"], provider_source=manifest.get("provider_source", ""),
            regions_var=manifest.get("regions_var", "regions"), cross=dict(manifest.get("cross") or {}),
            merge_outputs=tuple(manifest.get("merge_outputs") or ("peers",)),
            set_by_wgmesh=("region", "index", *sorted((manifest.get("cross") or {}).keys())),
        )
    return Stack(name, directory, frozenset(variables), frozenset(outputs))


def parse_var_value(raw: str) -> Json:
    """--var values: JSON lists/objects/numbers/booleans are passed as such, anything else as a string."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, (list, dict, int, float, bool)) else raw


def literal(value: Json) -> Json:
    """A --var value as Terraform JSON takes it literally: '${' and '%{' would be evaluated."""
    if isinstance(value, str):
        return value.replace("${", "$${").replace("%{", "%%{")
    if isinstance(value, list):
        return [literal(v) for v in value]
    if isinstance(value, dict):
        return {k: literal(v) for k, v in value.items()}
    return value


def check_vars(stack: Stack, variables: dict[str, str]) -> None:
    for key, value in variables.items():
        if key in stack.set_by_wgmesh:
            raise BadInput("--var", key, f"is set by wgmesh for every region of the {stack.name!r} stack")
        if key == "ha" and key not in stack.variables:
            raise BadInput("--var", f"ha={value}",
                           f"the stack {stack.name!r} cannot provide two gateways per site (it has no variable ha)")
        if key == "ha" and value not in ("true", "false"):
            raise BadInput("--var", f"ha={value}", "ha is true or false")
        if key not in stack.variables:
            raise BadInput(
                "--var", key, f"the stack {stack.name!r} has no such variable",
                hint="it has: " + ", ".join(sorted(stack.variables - set(stack.set_by_wgmesh))),
            )
    if stack.layout == "per-region":
        regions(stack, variables)


def regions(stack: Stack, variables: dict[str, str]) -> list[str]:
    raw = variables.get(stack.regions_var)
    if raw is None:
        raise BadInput(
            f"--var {stack.regions_var}", "(missing)", "is required: the regions to build, at least two",
            hint=f'--var {stack.regions_var}=\'["eu-west-1","us-east-1"]\' (or a comma-separated list)',
        )
    value = parse_var_value(raw)
    items = value if isinstance(value, list) else [r.strip() for r in str(raw).split(",") if r.strip()]
    names: list[str] = []
    for r in items:
        if not isinstance(r, str) or not REGION_RE.fullmatch(r):
            raise BadInput(f"--var {stack.regions_var}", r, "not a region name such as eu-west-1 or cn-north-1")
        names.append(r)
    if len(names) < 2 or len(set(names)) != len(names):
        raise BadInput(f"--var {stack.regions_var}", raw, "give at least two different regions")
    return names


def alias(region: str) -> str:
    return region.replace("-", "_")


def _source(stack: Stack, workdir: Path) -> str:
    rel = os.path.relpath(stack.directory, workdir)
    return rel if rel.startswith(".") else "./" + rel


def root_module(stack: Stack, workdir: Path, variables: dict[str, str],
                backend: dict[str, Json] | None = None) -> dict[str, Json]:
    """The root module (Terraform JSON) for one inventory; `backend`: where its state lives
    (a `terraform { backend {...} }` block; None: the default, terraform.tfstate beside it)."""
    root = _root_module(stack, workdir, variables)
    if backend is not None:
        terraform = root.setdefault("terraform", {})
        assert isinstance(terraform, dict)
        terraform["backend"] = backend
    return root


def _root_module(stack: Stack, workdir: Path, variables: dict[str, str]) -> dict[str, Json]:
    values = {k: literal(parse_var_value(v)) for k, v in sorted(variables.items())}
    if stack.layout != "per-region":
        return {
            "module": {"stack": {"source": _source(stack, workdir), **values}},
            "output": {name: {"value": f"${{module.stack.{name}}}"} for name in sorted(stack.outputs)},
        }
    names = regions(stack, variables)
    values[stack.regions_var] = [*names]
    modules: dict[str, Json] = {}
    for i, region in enumerate(names):
        m: dict[str, Json] = {
            "source": _source(stack, workdir),
            "providers": {stack.provider: f"{stack.provider}.{alias(region)}"},
            "region": region,
            "index": i,
            **values,
        }
        for inp, out in sorted(stack.cross.items()):
            others = ", ".join(f"module.{alias(r)}.{out}" for r in names if r != region)
            m[inp] = f"${{[{others}]}}"
        modules[alias(region)] = m
    root: dict[str, Json] = {
        "provider": {stack.provider: [{"alias": alias(r), "region": r} for r in names]},
        "module": modules,
        "output": {
            name: {"value": "${merge(" + ", ".join(f"module.{alias(r)}.{name}" for r in names) + ")}"}
            for name in stack.merge_outputs
        },
    }
    if stack.provider_source:
        root["terraform"] = {"required_providers": {stack.provider: {"source": stack.provider_source}}}
    return root
