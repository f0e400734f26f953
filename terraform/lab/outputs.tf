locals {
  # Public host keys as "type base64" (no comment), per host (site1, site1-vm,
  # site1a, ...). The paths come from the resources' output, which is unknown
  # while a host is being (re)created, so file() only runs once the key exists
  # (right after the first apply too). A missing file (lab removed behind
  # Terraform's back) gives no key.
  host_key_files = merge(
    { for k, r in terraform_data.host : k => r.output.gw_host_key },
    { for k, r in terraform_data.host : "${k}-vm" => r.output.vm_host_key },
    { for k, r in terraform_data.gateway : k => r.output.gw_host_key },
    { for k, r in terraform_data.lan : "${k}-vm" => r.output.vm_host_key },
  )
  host_keys = { for h, f in local.host_key_files : h => fileexists(f) ? [regex("^\\S+ \\S+", trimspace(file(f)))] : [] }

  # Every gateway, from the plan in main.tf: the one-gateway hosts and, with
  # ha, both gateways of every site, which also say their site and its route
  # table (the LAN's VIP, which the active gateway's failover agent holds on
  # lan0); the same instance is behind both.
  gateways = merge(
    { for k, h in local.hosts : k => {
      public   = h.public
      address  = h.gateway
      subnet   = h.subnet
      region   = h.region
      instance = { name = "${k}-vm", address = h.instance }
      ha       = {}
      # with ipv6: the IPv6 LAN, the gateway's and the instance's address in it
      ipv6 = var.ipv6 ? { subnet = h.subnet6, address = h.gateway6, instance = h.instance6 } : null
    } },
    { for k, g in local.ha_gateways : k => {
      public   = g.public
      address  = g.address
      subnet   = g.subnet
      region   = g.region
      instance = { name = "${g.site}-vm", address = local.ha_lans[g.site].instance }
      ipv6     = null # ha with ipv6 is refused (main.tf)
      ha = {
        site = g.site
        route_table = {
          kind      = "vip"
          address   = "${local.ha_lans[g.site].vip}/${split("/", g.subnet)[1]}"
          interface = "lan0"
        }
      }
    } },
  )

  # With ipv6 a peer also has its IPv6 subnet, private_address6 (the gateway's
  # IPv6 address in it) and its instance's address6; without, none of them.
  peer_objects = { for k, g in local.gateways : k => merge({
    endpoint         = g.public
    listen_port      = 51820
    private_address  = g.address
    subnets          = [for s in [g.subnet, try(g.ipv6.subnet, null)] : s if s != null] # a tuple, as before ipv6
    ssh_user         = "root"
    ssh_host         = g.public
    ssh_port         = 22
    ssh_key          = local.ssh_key
    ssh_host_keys    = local.host_keys[k]
    egress_interface = "detect"
    region           = g.region
    cloud            = "lab"
    instances = [merge({
      name          = g.instance.name
      address       = g.instance.address
      ssh_user      = "root"
      ssh_port      = 22
      ssh_host_keys = local.host_keys[g.instance.name]
    }, g.ipv6 == null ? {} : { address6 = g.ipv6.instance })]
  }, g.ha, g.ipv6 == null ? {} : { private_address6 = g.ipv6.address }) }
}

output "peers" {
  description = "The sites, in the wgmesh Terraform output contract: peer name => endpoint, addresses, subnets, SSH access (with pinned host keys), region, cloud, private instances; with ha, each site's two gateways, each also naming its site and the site's route table."
  value       = { for k, p in local.peer_objects : k => p if !contains(local.server_names, k) }
}

output "servers" {
  description = "Hosts built like sites but not managed as peers (for tests that add them by hand); same shape as peers."
  value       = { for k in local.server_names : k => local.peer_objects[k] }
}

output "lab" {
  description = "The lab itself: name, underlay, the controller's and the router's addresses, state dir, the labctl helper, the namespaces and what each host runs (init); with wan_delay_ms > 0 also that delay."
  value = merge({
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
      { for k, g in local.ha_gateways : k => var.init },
      { for k, l in local.ha_lans : "${k}-vm" => "plain" },
    )
    namespaces = concat(
      [local.router_ns],
      flatten([for k in concat(local.site_names, local.server_names) : [
        for h in concat(contains(keys(local.ha_lans), k) ? local.ha_lans[k].gateways : [k], ["${k}-vm"]) : "wgm-${var.name}-${h}"
      ]]),
    )
    # The sites with two gateways (ha): site => its gateways; empty without ha.
    ha = { for k, l in local.ha_lans : k => l.gateways }
    # With wan_delay_ms > 0, the router's one-way delay (ms); without, no such field: the
    # output of a lab built before the variable.
  }, var.wan_delay_ms > 0 ? { wan_delay_ms = var.wan_delay_ms } : {})
}
