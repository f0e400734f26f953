# The wgmesh lab: WireGuard "sites" simulated with network namespaces on this
# machine. No provider: every piece is a terraform_data resource whose
# create/destroy-time local-exec provisioners call ./labctl.
#
#   root netns ── wgm-<name> veth ── router netns wgm-<name>-rt
#     ├── veth ── gateway wgm-<name>-site<i> ── veth ── instance wgm-<name>-site<i>-vm
#     └── veth ── gateway wgm-<name>-srv<k>  ── veth ── instance wgm-<name>-srv<k>-vm
#
# With ha = true every site has two gateways on one LAN, a bridge in its
# private instance's namespace (the servers keep one gateway):
#
#     ├── veth ── gateway wgm-<name>-site<i>a ── veth ──┐ br0 in instance wgm-<name>-site<i>-vm
#     └── veth ── gateway wgm-<name>-site<i>b ── veth ──┘
#
# With init = "systemd" every gateway boots Debian 12 with systemd as PID 1
# in its namespace (labctl: systemd-nspawn on a cached root file system).
#
# With ipv6 = true every LAN (sites and servers) is dual stack: an IPv6 /64 as
# well, the gateway host 1, the instance host 10 with its IPv6 default route
# via the gateway. The underlay stays IPv4.
#
# With wan_delay_ms > 0 the router holds every packet it forwards that long
# (controller <-> host and host <-> host: a round trip pays it twice).

locals {
  # The machine's, not the project directory's: a lab's hosts are this machine's, and another
  # clone of the project (a second operator of a shared inventory) plans the same hosts.
  state_dir = abspath(var.state_dir != "" ? var.state_dir : "/var/lib/wgmesh-lab/${var.name}")
  labctl    = abspath("${path.module}/labctl")
  ssh_key   = "${local.state_dir}/id_ed25519"
  router_ns = "wgm-${var.name}-rt"

  site_names   = [for i in range(1, var.sites + 1) : "site${i}"]
  server_names = [for k in range(var.servers) : "srv${k + 1}"]

  # The address plan: every concrete address of the lab is computed here and
  # nowhere else. labctl is given these addresses as arguments, the outputs
  # read them from here, and the tests and benchmarks read the outputs.

  # The controller's end of the root-namespace veth wgm-<name>, and the
  # router's address on every one of its links (198.18.0.1 and 198.18.0.2).
  controller_address = cidrhost(var.underlay, 1)
  router_address     = cidrhost(var.underlay, 2)

  # Per site i (1-based): public 198.18.1.(10+i), LAN 10.10.i.0/24; with ha
  # its second gateway's public address 198.18.2.(10+i) (the block
  # 198.18.2.0/24 is used by nothing else: controller and router 198.18.0.x,
  # sites 198.18.1.x, servers 198.18.9.x).
  site_plans = { for i in range(1, var.sites + 1) : "site${i}" => {
    public   = cidrhost(var.underlay, 256 + 10 + i)
    public_b = cidrhost(var.underlay, 2 * 256 + 10 + i)
    subnet   = cidrsubnet(var.site_supernet, 8, i)
    region   = "lab-${i}"
  } }

  # Per host with one gateway (up-host): its public (underlay) address, its
  # LAN, and the LAN addresses of its gateway (host 1) and of its private
  # instance (host 10). Every site without ha, and every server:
  # server k (0-based): public 198.18.9.(20+k), LAN 10.77.(k+1).0/24
  host_networks = merge(
    { for k, s in local.site_plans : k => {
      public = s.public
      subnet = s.subnet
      region = s.region
    } if !var.ha },
    { for k in range(var.servers) : "srv${k + 1}" => {
      public = cidrhost(var.underlay, 9 * 256 + 20 + k)
      subnet = cidrsubnet(var.server_supernet, 8, k + 1)
      region = "lab-srv${k + 1}"
    } },
  )
  hosts = { for k, h in local.host_networks : k => merge(h, {
    gateway   = cidrhost(h.subnet, 1)
    instance  = cidrhost(h.subnet, 10)
    subnet6   = try(local.subnets6[k], null)
    gateway6  = try(cidrhost(local.subnets6[k], 1), null)
    instance6 = try(cidrhost(local.subnets6[k], 10), null)
  }) }

  # With ipv6, every one-gateway host's IPv6 LAN, a /64 (host 1 its gateway,
  # host 10 its instance, as in IPv4): site i fd10:10:0:i::/64 =
  # cidrsubnet(site_supernet6, 64 - len, i), server k (0-based)
  # fd10:77:0:(k+1)::/64; empty without ipv6 (the hosts' IPv6 fields are null).
  subnets6 = var.ipv6 ? merge(
    { for i in range(1, var.sites + 1) : "site${i}" => cidrsubnet(var.site_supernet6, 64 - local.supernet6_len.site, i) },
    { for k in range(var.servers) : "srv${k + 1}" => cidrsubnet(var.server_supernet6, 64 - local.supernet6_len.server, k + 1) },
  ) : {}
  supernet6_len = {
    site   = tonumber(split("/", var.site_supernet6)[1])
    server = tonumber(split("/", var.server_supernet6)[1])
  }
  # Two IPv6 prefixes overlap when they agree on the shorter one's bits.
  overlapping6 = var.ipv6 && (
    cidrsubnet("${split("/", var.site_supernet6)[0]}/${min(values(local.supernet6_len)...)}", 0, 0) ==
    cidrsubnet("${split("/", var.server_supernet6)[0]}/${min(values(local.supernet6_len)...)}", 0, 0)
  ) ? ["site_supernet6 and server_supernet6"] : []

  # With ha, per site: its LAN (up-lan), where host 1 is the site's route
  # table address, a virtual IP no host holds until the active gateway's
  # failover agent adds it; the private instance is host 10, its default
  # route is the VIP.
  ha_lans = { for k, s in local.site_plans : k => {
    subnet   = s.subnet
    vip      = cidrhost(s.subnet, 1)
    instance = cidrhost(s.subnet, 10)
    gateways = ["${k}a", "${k}b"]
  } if var.ha }
  # ... and its two gateways (up-gateway): site<i>a with the site's public
  # address and LAN host 2, site<i>b with the second plan and LAN host 3.
  ha_gateways = merge([for k, s in local.site_plans : {
    "${k}a" = { site = k, public = s.public, subnet = s.subnet, address = cidrhost(s.subnet, 2), region = s.region }
    "${k}b" = { site = k, public = s.public_b, subnet = s.subnet, address = cidrhost(s.subnet, 3), region = s.region }
  } if var.ha]...)

  # Network number and prefix length of the address plans, for overlap checks.
  plans = { for k, c in {
    underlay        = var.underlay
    site_supernet   = var.site_supernet
    server_supernet = var.server_supernet
    } : k => {
    len = tonumber(split("/", c)[1])
    num = sum([for idx, o in split(".", cidrhost(c, 0)) : tonumber(o) * pow(256, 3 - idx)])
  } }
  overlapping = [for pair in [
    ["underlay", "site_supernet"],
    ["underlay", "server_supernet"],
    ["site_supernet", "server_supernet"],
    ] : "${pair[0]} and ${pair[1]}" if(
    floor(local.plans[pair[0]].num / pow(2, 32 - min(local.plans[pair[0]].len, local.plans[pair[1]].len))) ==
    floor(local.plans[pair[1]].num / pow(2, 32 - min(local.plans[pair[0]].len, local.plans[pair[1]].len)))
  )]
}

resource "terraform_data" "router" {
  # Anything that changes the router rebuilds it (and, through their
  # triggers, every host).
  triggers_replace = {
    name      = var.name
    underlay  = var.underlay
    state_dir = local.state_dir
  }

  # Destroy-time provisioners can only see self: carry what they need.
  input = {
    name      = var.name
    underlay  = var.underlay
    state_dir = local.state_dir
    labctl    = local.labctl
  }

  # The addresses come straight from the plan: only destroy-time provisioners
  # need `input` (and they need no address); a change of underlay replaces
  # the router anyway.
  provisioner "local-exec" {
    command = "\"$LABCTL\" up-router \"$LAB_NAME\" \"$LAB_UNDERLAY\" \"$LAB_CONTROLLER\" \"$LAB_ROUTER\" \"$LAB_STATE_DIR\""
    environment = {
      LABCTL         = self.input.labctl
      LAB_NAME       = self.input.name
      LAB_UNDERLAY   = self.input.underlay
      LAB_CONTROLLER = local.controller_address
      LAB_ROUTER     = local.router_address
      LAB_STATE_DIR  = self.input.state_dir
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "\"$LABCTL\" down-router \"$LAB_NAME\" \"$LAB_UNDERLAY\" \"$LAB_STATE_DIR\""
    environment = {
      LABCTL        = self.input.labctl
      LAB_NAME      = self.input.name
      LAB_UNDERLAY  = self.input.underlay
      LAB_STATE_DIR = self.input.state_dir
    }
  }

  lifecycle {
    precondition {
      condition     = length(local.overlapping) == 0
      error_message = "The address plans must not overlap: ${join(", ", local.overlapping)} do."
    }
    precondition {
      condition     = length(local.overlapping6) == 0
      error_message = "The address plans must not overlap: ${join(", ", local.overlapping6)} do."
    }
    precondition {
      condition     = !(var.ha && var.ipv6)
      error_message = "ha = true and ipv6 = true cannot be combined yet: an HA site's route table address (the VIP its active gateway's failover agent holds) is IPv4 only. Build the HA lab without ipv6, or the dual-stack lab without ha."
    }
  }
}

# With wan_delay_ms > 0, distance: the router holds every packet it forwards that long (a
# supervised relay process and a TUN device in its namespace, labctl wan-delay). Its own
# resource: a change of the delay re-times the relay and rebuilds no host; with 0 (the default)
# it does not exist, so a lab built before the variable plans no change.
resource "terraform_data" "wan_delay" {
  count = var.wan_delay_ms > 0 ? 1 : 0

  triggers_replace = {
    router       = terraform_data.router.id
    wan_delay_ms = var.wan_delay_ms
  }

  input = {
    name      = var.name
    state_dir = local.state_dir
    labctl    = local.labctl
  }

  provisioner "local-exec" {
    command = "\"$LABCTL\" wan-delay \"$LAB_NAME\" \"$LAB_DELAY\" \"$LAB_STATE_DIR\""
    environment = {
      LABCTL        = self.input.labctl
      LAB_NAME      = self.input.name
      LAB_DELAY     = var.wan_delay_ms
      LAB_STATE_DIR = self.input.state_dir
    }
  }

  # No delay any more (when the router goes too, down-router removes the relay as well).
  provisioner "local-exec" {
    when    = destroy
    command = "\"$LABCTL\" wan-delay \"$LAB_NAME\" 0"
    environment = {
      LABCTL   = self.input.labctl
      LAB_NAME = self.input.name
    }
  }
}

# The root file system of systemd gateways: built once per machine (~40 s,
# debootstrap) and cached outside the lab, so destroying the lab keeps it.
resource "terraform_data" "rootfs" {
  count = var.init == "systemd" ? 1 : 0

  provisioner "local-exec" {
    command     = "\"$LABCTL\" rootfs"
    environment = { LABCTL = local.labctl }
  }
}

# Every host: the sites (exported in `peers`) and, built exactly like them, the
# servers a user adds by hand (wgmesh addpeer), exported in `servers`.
resource "terraform_data" "host" {
  for_each   = local.hosts
  depends_on = [terraform_data.rootfs]

  # A change of init rebuilds the host; "plain" adds no key, so the hosts of a
  # lab built before init existed are not replaced.
  triggers_replace = merge({
    name      = var.name
    host      = each.key
    public    = each.value.public
    subnet    = each.value.subnet
    state_dir = local.state_dir
    router    = terraform_data.router.id
  }, var.init == "plain" ? {} : { init = var.init }, var.ipv6 ? { subnet6 = each.value.subnet6 } : {})

  input = {
    name        = var.name
    host        = each.key
    public      = each.value.public
    subnet      = each.value.subnet
    state_dir   = local.state_dir
    labctl      = local.labctl
    gw_host_key = "${local.state_dir}/hosts/${each.key}/ssh_host_ed25519_key.pub"
    vm_host_key = "${local.state_dir}/hosts/${each.key}-vm/ssh_host_ed25519_key.pub"
  }

  # Gateway and instance addresses follow from the subnets, which replace
  # the host when they change; like the router's, they need not be in input.
  # With ipv6 also the IPv6 LAN and its gateway and instance addresses.
  provisioner "local-exec" {
    command = "\"$LABCTL\" up-host \"$LAB_NAME\" \"$LAB_HOST\" \"$LAB_PUBLIC\" \"$LAB_SUBNET\" \"$LAB_GATEWAY\" \"$LAB_INSTANCE\" \"$LAB_STATE_DIR\" \"$LAB_INIT\"${var.ipv6 ? " \"$LAB_SUBNET6\" \"$LAB_GATEWAY6\" \"$LAB_INSTANCE6\"" : ""}"
    environment = merge({
      LABCTL        = self.input.labctl
      LAB_NAME      = self.input.name
      LAB_HOST      = self.input.host
      LAB_PUBLIC    = self.input.public
      LAB_SUBNET    = self.input.subnet
      LAB_GATEWAY   = each.value.gateway
      LAB_INSTANCE  = each.value.instance
      LAB_STATE_DIR = self.input.state_dir
      LAB_INIT      = var.init
      }, var.ipv6 ? {
      LAB_SUBNET6   = each.value.subnet6
      LAB_GATEWAY6  = each.value.gateway6
      LAB_INSTANCE6 = each.value.instance6
    } : {})
  }

  provisioner "local-exec" {
    when    = destroy
    command = "\"$LABCTL\" down-host \"$LAB_NAME\" \"$LAB_HOST\" \"$LAB_STATE_DIR\""
    environment = {
      LABCTL        = self.input.labctl
      LAB_NAME      = self.input.name
      LAB_HOST      = self.input.host
      LAB_STATE_DIR = self.input.state_dir
    }
  }
}

# With ha: every site's LAN and private instance, then its two gateways.
resource "terraform_data" "lan" {
  for_each = local.ha_lans
  # After the one-gateway hosts: a site switching to (or from) ha keeps its
  # instance's namespace wgm-<name>-site<i>-vm, so the old shape must be gone
  # before the new one is built (Terraform orders both ways by this).
  depends_on = [terraform_data.host]

  triggers_replace = {
    name      = var.name
    site      = each.key
    subnet    = each.value.subnet
    state_dir = local.state_dir
    router    = terraform_data.router.id
  }

  input = {
    name        = var.name
    site        = each.key
    state_dir   = local.state_dir
    labctl      = local.labctl
    vm_host_key = "${local.state_dir}/hosts/${each.key}-vm/ssh_host_ed25519_key.pub"
  }

  # The instance address and the VIP follow from the subnet (see host).
  provisioner "local-exec" {
    command = "\"$LABCTL\" up-lan \"$LAB_NAME\" \"$LAB_SITE\" \"$LAB_SUBNET\" \"$LAB_INSTANCE\" \"$LAB_VIP\" \"$LAB_STATE_DIR\""
    environment = {
      LABCTL        = self.input.labctl
      LAB_NAME      = self.input.name
      LAB_SITE      = self.input.site
      LAB_SUBNET    = each.value.subnet
      LAB_INSTANCE  = each.value.instance
      LAB_VIP       = each.value.vip
      LAB_STATE_DIR = self.input.state_dir
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "\"$LABCTL\" down-host \"$LAB_NAME\" \"$LAB_SITE\" \"$LAB_STATE_DIR\""
    environment = {
      LABCTL        = self.input.labctl
      LAB_NAME      = self.input.name
      LAB_SITE      = self.input.site
      LAB_STATE_DIR = self.input.state_dir
    }
  }
}

resource "terraform_data" "gateway" {
  for_each   = local.ha_gateways
  depends_on = [terraform_data.rootfs]

  # A new LAN (or router, which renews the LAN) rebuilds its gateways.
  triggers_replace = merge({
    name      = var.name
    host      = each.key
    public    = each.value.public
    subnet    = each.value.subnet
    state_dir = local.state_dir
    lan       = terraform_data.lan[each.value.site].id
  }, var.init == "plain" ? {} : { init = var.init })

  input = {
    name        = var.name
    host        = each.key
    state_dir   = local.state_dir
    labctl      = local.labctl
    gw_host_key = "${local.state_dir}/hosts/${each.key}/ssh_host_ed25519_key.pub"
  }

  provisioner "local-exec" {
    command = "\"$LABCTL\" up-gateway \"$LAB_NAME\" \"$LAB_HOST\" \"$LAB_PUBLIC\" \"$LAB_SUBNET\" \"$LAB_GATEWAY\" \"$LAB_SITE\" \"$LAB_STATE_DIR\" \"$LAB_INIT\""
    environment = {
      LABCTL        = self.input.labctl
      LAB_NAME      = self.input.name
      LAB_HOST      = self.input.host
      LAB_PUBLIC    = each.value.public
      LAB_SUBNET    = each.value.subnet
      LAB_GATEWAY   = each.value.address
      LAB_SITE      = each.value.site
      LAB_STATE_DIR = self.input.state_dir
      LAB_INIT      = var.init
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "\"$LABCTL\" down-host \"$LAB_NAME\" \"$LAB_HOST\" \"$LAB_STATE_DIR\""
    environment = {
      LABCTL        = self.input.labctl
      LAB_NAME      = self.input.name
      LAB_HOST      = self.input.host
      LAB_STATE_DIR = self.input.state_dir
    }
  }
}

# terraform_data cannot see drift: if the lab vanished behind Terraform's back
# (reboot, `labctl down-all`), say so instead of silently planning no changes.
check "lab_present" {
  assert {
    condition     = length(local.missing) == 0
    error_message = "Lab pieces are gone outside Terraform (reboot or labctl down-all?): ${join(", ", local.missing)}. Rebuild with `terraform apply -replace=terraform_data.router`, or `terraform destroy` then `terraform apply`."
  }
}

locals {
  # Empty while the resources are being created (their output is unknown).
  missing = concat(
    fileexists("/run/netns/wgm-${terraform_data.router.output.name}-rt") ? [] : ["wgm-${terraform_data.router.output.name}-rt"],
    [for k, r in terraform_data.host : k if !(
      fileexists("/run/netns/wgm-${r.output.name}-${r.output.host}") &&
      fileexists("/run/netns/wgm-${r.output.name}-${r.output.host}-vm") &&
      fileexists(r.output.gw_host_key) &&
      fileexists(r.output.vm_host_key)
    )],
    [for k, r in terraform_data.lan : k if !(
      fileexists("/run/netns/wgm-${r.output.name}-${r.output.site}-vm") &&
      fileexists(r.output.vm_host_key)
    )],
    [for k, r in terraform_data.gateway : k if !(
      fileexists("/run/netns/wgm-${r.output.name}-${r.output.host}") &&
      fileexists(r.output.gw_host_key)
    )],
  )
}
