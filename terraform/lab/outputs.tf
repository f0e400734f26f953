locals {
  # Public host keys as "type base64" (no comment). The paths come from the
  # resources' output, which is unknown while a host is being (re)created, so
  # file() only runs once the key exists (right after the first apply too).
  # A missing file (lab removed behind Terraform's back) gives no key.
  host_keys = { for k, r in terraform_data.host : k => {
    gw = fileexists(r.output.gw_host_key) ? [regex("^\\S+ \\S+", trimspace(file(r.output.gw_host_key)))] : []
    vm = fileexists(r.output.vm_host_key) ? [regex("^\\S+ \\S+", trimspace(file(r.output.vm_host_key)))] : []
  } }

  # Every address comes from the plan in main.tf (local.hosts).
  peer_objects = { for k, h in local.hosts : k => {
    endpoint         = h.public
    listen_port      = 51820
    private_address  = h.gateway
    subnets          = [h.subnet]
    ssh_user         = "root"
    ssh_host         = h.public
    ssh_port         = 22
    ssh_key          = local.ssh_key
    ssh_host_keys    = local.host_keys[k].gw
    egress_interface = "detect"
    region           = h.region
    cloud            = "lab"
    instances = [{
      name          = "${k}-vm"
      address       = h.instance
      ssh_user      = "root"
      ssh_port      = 22
      ssh_host_keys = local.host_keys[k].vm
    }]
  } }
}

output "peers" {
  description = "The sites, in the wgmesh Terraform output contract: peer name => endpoint, addresses, subnets, SSH access (with pinned host keys), region, cloud, private instances."
  value       = { for k in local.site_names : k => local.peer_objects[k] }
}

output "servers" {
  description = "Hosts built like sites but not managed as peers (for tests that add them by hand); same shape as peers."
  value       = { for k in local.server_names : k => local.peer_objects[k] }
}

output "lab" {
  description = "The lab itself: name, underlay, the controller's and the router's addresses, state dir, the labctl helper, the namespaces and what each host runs (init)."
  value = {
    name               = var.name
    underlay           = var.underlay
    controller_address = local.controller_address
    router_address     = local.router_address
    state_dir          = local.state_dir
    labctl             = local.labctl
    # What each host runs: "systemd" (a booted Debian system) or "plain" (a namespace with sshd).
    init = merge(
      { for k, h in local.hosts : k => var.init },
      { for k, h in local.hosts : "${k}-vm" => "plain" },
    )
    namespaces = concat(
      [local.router_ns],
      flatten([for k in concat(local.site_names, local.server_names) : ["wgm-${var.name}-${k}", "wgm-${var.name}-${k}-vm"]]),
    )
  }
}
