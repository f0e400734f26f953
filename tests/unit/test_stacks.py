import json
from pathlib import Path

import pytest

from wgmesh import stacks
from wgmesh.errors import BadInput

REPO_STACKS = Path(__file__).resolve().parents[2] / "terraform"


def _stack(tmp_path, layout=None):
    d = tmp_path / "st"
    d.mkdir()
    (d / "variables.tf").write_text(
        'variable "region" {}\nvariable "index" {}\nvariable "regions" {}\nvariable "peer_gateway_ips" {}\n'
        'variable "operator_cidr" {}\n'
    )
    (d / "outputs.tf").write_text('output "peers" {\n  value = {}\n}\noutput "gateway_public_ip" {\n  value = ""\n}\n')
    if layout:
        (d / stacks.MANIFEST).write_text(json.dumps(layout))
    return stacks.load_stack(tmp_path, "st")


PER_REGION = {"layout": "per-region", "provider": "aws", "provider_source": "hashicorp/aws",
              "cross": {"peer_gateway_ips": "gateway_public_ip"}, "merge_outputs": ["peers"]}


def test_lab_is_single_layout():
    st = stacks.load_stack(REPO_STACKS, "lab")
    assert st.layout == "single" and {"sites", "servers", "name", "underlay"} <= st.variables
    root = stacks.root_module(st, REPO_STACKS.parent / ".wgmesh/lab/terraform", {"sites": "3"})
    assert root["module"]["stack"] == {"source": "../../../terraform/lab", "sites": 3}
    assert root["output"]["peers"] == {"value": "${module.stack.peers}"}


def test_per_region_root(tmp_path):
    st = _stack(tmp_path, PER_REGION)
    root = stacks.root_module(st, tmp_path / "work", {
        "regions": '["cn-northwest-1","cn-north-1"]', "operator_cidr": "203.0.113.0/24"})
    assert root["provider"]["aws"] == [
        {"alias": "cn_northwest_1", "region": "cn-northwest-1"}, {"alias": "cn_north_1", "region": "cn-north-1"}]
    a = root["module"]["cn_north_1"]
    assert a["providers"] == {"aws": "aws.cn_north_1"} and a["region"] == "cn-north-1" and a["index"] == 1
    assert a["regions"] == ["cn-northwest-1", "cn-north-1"] and a["operator_cidr"] == "203.0.113.0/24"
    assert a["peer_gateway_ips"] == "${[module.cn_northwest_1.gateway_public_ip]}"
    assert root["output"]["peers"]["value"] == "${merge(module.cn_northwest_1.peers, module.cn_north_1.peers)}"
    assert root["terraform"]["required_providers"]["aws"]["source"] == "hashicorp/aws"
    comma = stacks.root_module(st, tmp_path / "work", {"regions": "eu-west-1, us-east-1", "operator_cidr": "x"})
    assert list(comma["module"]) == ["eu_west_1", "us_east_1"]


@pytest.mark.parametrize("variables,field", [
    ({"operator_cidr": "x"}, "regions"),
    ({"regions": '["eu-west-1"]'}, "regions"),
    ({"regions": '["eu-west-1","eu-west-1"]'}, "regions"),
    ({"regions": '["eu-west-1","mars-1"]'}, "regions"),
    ({"regions": '["eu-west-1","us-east-1"]', "index": "3"}, "--var"),
    ({"regions": '["eu-west-1","us-east-1"]', "nope": "3"}, "--var"),
])
def test_per_region_refusals(tmp_path, variables, field):
    st = _stack(tmp_path, PER_REGION)
    with pytest.raises(BadInput) as e:
        stacks.check_vars(st, variables)
    assert field in e.value.field


def test_var_values_are_literal(tmp_path):
    """'${...}' in a --var value must reach Terraform as text, not as an expression."""
    st = _stack(tmp_path, PER_REGION)
    root = stacks.root_module(st, tmp_path / "w", {"regions": "eu-west-1,us-east-1",
                                                   "operator_cidr": "${file(\"/etc/shadow\")} %{if x}"})
    assert root["module"]["eu_west_1"]["operator_cidr"] == '$${file("/etc/shadow")} %%{if x}'


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path):
    stack = tmp_path / "odd"
    stack.mkdir()
    (stack / "main.tf").write_text('variable "x" {}\n')
    (stack / "wgmesh-stack.json").write_text("[1, 2]\n")
    with pytest.raises(BadInput, match="must be a JSON object"):
        stacks.load_stack(tmp_path, "odd")
