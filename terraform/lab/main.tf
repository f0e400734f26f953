# The wgmesh lab: WireGuard "sites" simulated with network namespaces on this
# machine. No provider: every piece is a terraform_data resource whose
# create/destroy-time local-exec provisioners call ./labctl.
#
#   root netns ── wgm-<name> veth ── router netns wgm-<name>-rt
#     ├── veth ── gateway wgm-<name>-site<i> ── veth ── instance wgm-<name>-site<i>-vm
#     └── veth ── gateway wgm-<name>-srv<k>  ── veth ── instance wgm-<name>-srv<k>-vm

locals {
  state_dir = abspath(var.state_dir != "" ? var.state_dir : "${path.root}/lab-state")
  labctl    = abspath("${path.module}/labctl")
  ssh_key   = "${local.state_dir}/id_ed25519"
  router_ns = "wgm-${var.name}-rt"

  site_names   = [for i in range(1, var.sites + 1) : "site${i}"]
  server_names = [for k in range(var.servers) : "srv${k + 1}"]

  # site i (1-based): public 198.18.1.(10+i), subnet 10.10.i.0/24
  sites = { for i in range(1, var.sites + 1) : "site${i}" => {
    public = cidrhost(var.underlay, 256 + 10 + i)
    subnet = cidrsubnet(var.site_supernet, 8, i)
    region = "lab-${i}"
  } }

  # server k (0-based): public 198.18.9.(20+k), subnet 10.77.(k+1).0/24
  servers = { for k in range(var.servers) : "srv${k + 1}" => {
    public = cidrhost(var.underlay, 9 * 256 + 20 + k)
    subnet = cidrsubnet(var.server_supernet, 8, k + 1)
    region = "lab-srv${k + 1}"
  } }

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

  provisioner "local-exec" {
    command = "\"$LABCTL\" up-router \"$LAB_NAME\" \"$LAB_UNDERLAY\" \"$LAB_STATE_DIR\""
    environment = {
      LABCTL        = self.input.labctl
      LAB_NAME      = self.input.name
      LAB_UNDERLAY  = self.input.underlay
      LAB_STATE_DIR = self.input.state_dir
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
  }
}

# Every host: the sites (exported in `peers`) and, built exactly like them, the
# servers a user adds by hand (wgmesh addpeer), exported in `servers`.
resource "terraform_data" "host" {
  for_each = merge(local.sites, local.servers)

  triggers_replace = {
    name      = var.name
    host      = each.key
    public    = each.value.public
    subnet    = each.value.subnet
    state_dir = local.state_dir
    router    = terraform_data.router.id
  }

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

  provisioner "local-exec" {
    command = "\"$LABCTL\" up-host \"$LAB_NAME\" \"$LAB_HOST\" \"$LAB_PUBLIC\" \"$LAB_SUBNET\" \"$LAB_STATE_DIR\""
    environment = {
      LABCTL        = self.input.labctl
      LAB_NAME      = self.input.name
      LAB_HOST      = self.input.host
      LAB_PUBLIC    = self.input.public
      LAB_SUBNET    = self.input.subnet
      LAB_STATE_DIR = self.input.state_dir
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
  )
}
