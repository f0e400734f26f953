# One region of the wgmesh AWS mesh: a VPC with a public subnet (the WireGuard
# gateway, with an Elastic IP) and a private subnet (workloads, no public IP,
# no NAT gateway) whose route table sends every other site's CIDR to the
# gateway's network interface (routed mode: workloads keep their own source
# address across the mesh).
#
# With ha = true: a second gateway (b) in a second availability zone (its own
# public subnet and Elastic IP, the same security group and user data), and an
# instance role on both gateways that may only switch the private route table's
# routes to the other sites (the wgmesh failover agent on the gateway that
# becomes active does it, see wgmesh/agent/ec2.py). The routes start on
# gateway a, and Terraform leaves their target to the agent afterwards.
#
# With ipv6 = true: dual stack. The VPC gets an Amazon-provided IPv6 /56 and
# every subnet a /64 of it (assigned to new interfaces); the gateways and the
# test instance get an IPv6 address each; the private route table sends the
# other sites' IPv6 VPC CIDRs to the gateway's interface as it does their IPv4
# ones, and the rest of ::/0 to an egress-only internet gateway; the security
# groups admit IPv6 as they admit IPv4, and ICMPv6. The WireGuard underlay stays
# IPv4 (the Elastic IPs). Amazon's addresses are global: wgmesh routes them
# (no IPv6 NAT).

locals {
  # VPC CIDR of every region of the mesh, by the same rule in every module
  # call: vpc_cidrs[region], else cidrsubnet(vpc_supernet, vpc_newbits, i).
  # "" when the supernet has no room for region i (caught by a precondition).
  cidrs = { for i, r in var.regions : r => (
    lookup(var.vpc_cidrs, r, "") != "" ? var.vpc_cidrs[r] : try(cidrsubnet(var.vpc_supernet, var.vpc_newbits, i), "")
  ) }

  vpc_cidr    = lookup(local.cidrs, var.region, "")
  other_cidrs = [for r in var.regions : local.cidrs[r] if r != var.region]
  # What the private subnet sends to the gateway: the other sites, plus any
  # extra networks behind the mesh (never the own VPC).
  routed_cidrs = setsubtract(toset(concat(local.other_cidrs, var.extra_routed_cidrs)), [local.vpc_cidr])

  # Pairs of regions whose VPC CIDRs overlap (compared at the shorter prefix).
  cidr_prefixes = { for r, c in local.cidrs : r => try(tonumber(split("/", c)[1]), -1) }
  overlapping = flatten([for i, a in var.regions : [for j, b in var.regions : "${a} (${local.cidrs[a]}) and ${b} (${local.cidrs[b]})"
    if i < j && try(
      cidrsubnet("${cidrhost(local.cidrs[a], 0)}/${min(local.cidr_prefixes[a], local.cidr_prefixes[b])}", 0, 0) ==
      cidrsubnet("${cidrhost(local.cidrs[b], 0)}/${min(local.cidr_prefixes[a], local.cidr_prefixes[b])}", 0, 0),
      false
    )
  ]])

  public_cidr   = try(cidrsubnet(local.vpc_cidr, 8, 0), "")
  private_cidr  = try(cidrsubnet(local.vpc_cidr, 8, 1), "")
  public_b_cidr = try(cidrsubnet(local.vpc_cidr, 8, 2), "")

  # ipv6: the VPC's Amazon-provided /56 (known once the VPC exists), a /64 of it
  # per subnet in the order of the IPv4 ones, and the other sites' /56s (from
  # their modules: peer_vpc_ipv6_cidrs, filled in by wgmesh). cidrsubnet(c, 0, 0)
  # is c in canonical form (an emulator may write 2400:6500:0f1c:...).
  vpc_ipv6_cidr = var.ipv6 ? cidrsubnet(aws_vpc.this.ipv6_cidr_block, 0, 0) : ""
  # The subnets' /64s, public, private, public_b (null without ipv6).
  ipv6_subnet_cidrs = [for n in range(3) : var.ipv6 ? cidrsubnet(aws_vpc.this.ipv6_cidr_block, 8, n) : null]

  prefix = "${var.name}-${var.region}"

  tags = {
    "wgmesh"        = var.name
    "wgmesh:region" = var.region
  }

  key_name = var.key_name != "" ? var.key_name : one(aws_key_pair.this[*].key_name)

  # AMI: amis[region], else ami, else the newest Ubuntu 22.04 amd64 server
  # image published by Canonical in this partition.
  ami_given = lookup(var.amis, var.region, var.ami)
  canonical_owners = {
    "aws"        = "099720109477"
    "aws-cn"     = "837727238323"
    "aws-us-gov" = "513442679011"
  }
  ami = local.ami_given != "" ? local.ami_given : one(data.aws_ami.ubuntu[*].id)

  # Availability zones: availability_zones[region] (a zone or a list), else the
  # first available zones that offer instance_type, else the first available
  # zones (some APIs and emulators list no offerings). The first is gateway a's
  # (and the private subnet's and the test instance's); with ha, the second is
  # gateway b's.
  az_names   = data.aws_availability_zones.available.names
  az_offered = [for n in local.az_names : n if contains(data.aws_ec2_instance_type_offerings.this.locations, n)]
  az_pool    = length(local.az_offered) > 0 ? local.az_offered : local.az_names
  az_given   = compact(flatten([try(var.availability_zones[var.region], [])]))
  zones = length(local.az_given) > 0 ? local.az_given : (
    slice(local.az_pool, 0, min(var.ha ? 2 : 1, length(local.az_pool)))
  )
  availability_zone   = local.zones[0]
  availability_zone_b = try(local.zones[1], "")

  # Runs once, at first boot (cloud-init). wgmesh pushes wg0.conf over SSH;
  # its PostUp also turns forwarding on, this makes it survive reboots.
  gateway_user_data = <<-EOT
    #!/bin/sh
    # wgmesh gateway: IPv4 forwarding (routed mode), wireguard-tools, and fping (wgmesh verify).
    set -u
    printf 'net.ipv4.ip_forward=1\n' > /etc/sysctl.d/99-wgmesh.conf
    sysctl --system
    export DEBIAN_FRONTEND=noninteractive
    for attempt in 1 2 3 4 5; do
      apt-get update && apt-get install -y -o DPkg::Lock::Timeout=300 wireguard-tools fping && exit 0
      sleep 15
    done
    exit 1
  EOT
}

data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  state = "available"

  # Real availability zones only (no Local Zones / Wavelength Zones).
  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

data "aws_ec2_instance_type_offerings" "this" {
  location_type = "availability-zone"

  filter {
    name   = "instance-type"
    values = [var.instance_type]
  }
}

data "aws_ami" "ubuntu" {
  count = local.ami_given == "" ? 1 : 0

  most_recent = true
  owners      = [lookup(local.canonical_owners, data.aws_partition.current.partition, local.canonical_owners["aws"])]

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-amd64-server-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

# ---------------------------------------------------------------- network

resource "aws_vpc" "this" {
  cidr_block           = local.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  # ipv6: an Amazon-provided IPv6 /56 (null: none, as before ipv6 existed).
  assign_generated_ipv6_cidr_block = var.ipv6 ? true : null

  tags = merge(local.tags, { Name = local.prefix })

  lifecycle {
    precondition {
      condition     = var.index < length(var.regions) && try(var.regions[var.index] == var.region, false)
      error_message = "index ${var.index} must be the position of region \"${var.region}\" in regions ${jsonencode(var.regions)}."
    }

    precondition {
      condition     = length(var.peer_gateway_ips) == length(var.regions) - 1
      error_message = "peer_gateway_ips must hold the gateway IP of every other region: ${length(var.regions) - 1} expected, ${length(var.peer_gateway_ips)} given."
    }

    precondition {
      condition     = alltrue([for r, c in local.cidrs : c != "" && local.cidr_prefixes[r] >= 16 && local.cidr_prefixes[r] <= 20])
      error_message = "every region needs a VPC CIDR from /16 to /20: got ${jsonencode(local.cidrs)} (vpc_supernet ${var.vpc_supernet}, vpc_newbits ${var.vpc_newbits}, vpc_cidrs ${jsonencode(var.vpc_cidrs)}); \"\" means vpc_supernet has no room for that region: give a bigger vpc_supernet or more vpc_newbits (e.g. vpc_supernet = \"10.96.0.0/12\" with vpc_newbits = 4), or vpc_cidrs."
    }

    precondition {
      condition     = length(local.overlapping) == 0
      error_message = "the VPC CIDRs of the regions must not overlap: ${join("; ", local.overlapping)}."
    }

    precondition {
      condition     = !var.ha || (length(var.peer_gateway_b_ips) == length(var.regions) - 1 && alltrue([for ips in var.peer_gateway_b_ips : length(ips) == 1]))
      error_message = "with ha, peer_gateway_b_ips must hold the second gateway IP of every other region, one list of one address per region: ${length(var.regions) - 1} expected, got ${length(var.peer_gateway_b_ips)} list(s) of ${jsonencode([for ips in var.peer_gateway_b_ips : length(ips)])} address(es)."
    }

    precondition {
      condition     = (var.key_name != "") != (var.ssh_public_key != "")
      error_message = "set exactly one of key_name (an existing EC2 key pair) and ssh_public_key (an OpenSSH public key to import); key_name is ${var.key_name == "" ? "empty" : "set"}, ssh_public_key is ${var.ssh_public_key == "" ? "empty" : "set"}."
    }
  }
}

resource "aws_subnet" "public" {
  vpc_id                  = aws_vpc.this.id
  cidr_block              = local.public_cidr
  availability_zone       = local.availability_zone
  map_public_ip_on_launch = false
  # ipv6: a /64 of the VPC's /56, an address of it for every new interface.
  ipv6_cidr_block                 = local.ipv6_subnet_cidrs[0]
  assign_ipv6_address_on_creation = var.ipv6

  tags = merge(local.tags, { Name = "${local.prefix}-public" })

  lifecycle {
    precondition {
      condition     = startswith(local.availability_zone, var.region)
      error_message = "availability zone \"${local.availability_zone}\" (availability_zones) is not in region ${var.region}."
    }
  }
}

# ha: gateway b's subnet, in the second availability zone.
resource "aws_subnet" "public_b" {
  count = var.ha ? 1 : 0

  vpc_id                  = aws_vpc.this.id
  cidr_block              = local.public_b_cidr
  availability_zone       = local.availability_zone_b
  map_public_ip_on_launch = false
  # ipv6: a /64 of the VPC's /56, an address of it for every new interface.
  ipv6_cidr_block                 = local.ipv6_subnet_cidrs[2]
  assign_ipv6_address_on_creation = var.ipv6

  tags = merge(local.tags, { Name = "${local.prefix}-public-b" })

  lifecycle {
    precondition {
      condition     = length(local.zones) >= 2 && local.availability_zone_b != local.availability_zone
      error_message = "ha needs two different availability zones in region ${var.region}, got ${jsonencode(local.zones)} (${length(local.az_given) > 0 ? "availability_zones[\"${var.region}\"]" : "the zones the region offers"}): give two, e.g. availability_zones = { \"${var.region}\" = [\"${var.region}a\", \"${var.region}b\"] }, or build this mesh without ha."
    }

    precondition {
      condition     = local.availability_zone_b == "" || startswith(local.availability_zone_b, var.region)
      error_message = "availability zone \"${local.availability_zone_b}\" (availability_zones) is not in region ${var.region}."
    }
  }
}

resource "aws_subnet" "private" {
  vpc_id                  = aws_vpc.this.id
  cidr_block              = local.private_cidr
  availability_zone       = local.availability_zone
  map_public_ip_on_launch = false
  # ipv6: a /64 of the VPC's /56, an address of it for every new interface.
  ipv6_cidr_block                 = local.ipv6_subnet_cidrs[1]
  assign_ipv6_address_on_creation = var.ipv6

  tags = merge(local.tags, { Name = "${local.prefix}-private" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = merge(local.tags, { Name = local.prefix })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${local.prefix}-public" })
}

resource "aws_route" "public_default" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

# ipv6: the gateways reach the IPv6 internet through the internet gateway.
resource "aws_route" "public_default6" {
  count = var.ipv6 ? 1 : 0

  route_table_id              = aws_route_table.public.id
  destination_ipv6_cidr_block = "::/0"
  gateway_id                  = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  subnet_id      = aws_subnet.public.id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table_association" "public_b" {
  count = var.ha ? 1 : 0

  subnet_id      = aws_subnet.public_b[0].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${local.prefix}-private" })

  lifecycle {
    # Here, not on the VPC: the other regions' IPv6 CIDRs depend on their VPCs,
    # which would depend on this one's.
    precondition {
      condition     = !var.ipv6 || length(var.peer_vpc_ipv6_cidrs) == length(var.regions) - 1
      error_message = "with ipv6, peer_vpc_ipv6_cidrs must hold the IPv6 VPC CIDR of every other region: ${length(var.regions) - 1} expected, ${length(var.peer_vpc_ipv6_cidrs)} given."
    }
  }
}

# Routed mode: every other site's VPC goes through the gateway's interface
# (gateway a's; with ha, the failover agent of whichever gateway is active
# points them at its own interface with ec2:ReplaceRoute).
resource "aws_route" "to_site" {
  for_each = local.routed_cidrs

  route_table_id         = aws_route_table.private.id
  destination_cidr_block = each.key
  network_interface_id   = aws_instance.gateway.primary_network_interface_id

  lifecycle {
    # The target belongs to the failover agent once the route exists: a later
    # apply must not move the routes back to gateway a after a switch to b.
    # (instance_id, which AWS also reports for a route to an instance's
    # interface, is computed-only in this provider: nothing to ignore there.)
    ignore_changes = [network_interface_id]
    # ... but a new gateway a (terraform apply -replace, a changed subnet)
    # gets the routes again, as it did before ha existed.
    replace_triggered_by = [aws_instance.gateway.id]
  }
}

# ipv6: the same for the other sites' IPv6 VPC CIDRs. count, not for_each: they
# are unknown until the other regions' VPCs exist, but their number is known.
resource "aws_route" "to_site6" {
  count = var.ipv6 ? length(var.peer_vpc_ipv6_cidrs) : 0

  route_table_id              = aws_route_table.private.id
  destination_ipv6_cidr_block = var.peer_vpc_ipv6_cidrs[count.index]
  network_interface_id        = aws_instance.gateway.primary_network_interface_id

  lifecycle {
    # As for to_site: the target belongs to the failover agent (ha).
    ignore_changes       = [network_interface_id]
    replace_triggered_by = [aws_instance.gateway.id]
  }
}

# ipv6: the private subnet's own IPv6 egress to the internet (outbound only:
# nothing from the internet can open a connection to it), free per hour.
resource "aws_egress_only_internet_gateway" "this" {
  count = var.ipv6 ? 1 : 0

  vpc_id = aws_vpc.this.id

  tags = merge(local.tags, { Name = local.prefix })
}

resource "aws_route" "private_default6" {
  count = var.ipv6 ? 1 : 0

  route_table_id              = aws_route_table.private.id
  destination_ipv6_cidr_block = "::/0"
  egress_only_gateway_id      = aws_egress_only_internet_gateway.this[0].id
}

resource "aws_route_table_association" "private" {
  subnet_id      = aws_subnet.private.id
  route_table_id = aws_route_table.private.id
}

# ---------------------------------------------------------------- security groups

resource "aws_security_group" "gateway" {
  name        = "${local.prefix}-gateway"
  description = "wgmesh gateway: WireGuard from the peer gateways, SSH from the operator, all from the VPC"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${local.prefix}-gateway" })
}

# count, not for_each: the other regions' Elastic IPs are unknown until they
# exist, but their number is known.
resource "aws_vpc_security_group_ingress_rule" "gateway_wireguard_peer" {
  count = length(var.peer_gateway_ips)

  security_group_id = aws_security_group.gateway.id
  description       = "WireGuard from a peer gateway"
  ip_protocol       = "udp"
  from_port         = var.listen_port
  to_port           = var.listen_port
  cidr_ipv4         = "${var.peer_gateway_ips[count.index]}/32"

  tags = merge(local.tags, { Name = "${local.prefix}-wireguard-peer-${count.index}" })
}

# ha: the other regions' second gateways, and this region's two gateways
# (each is a peer of the other; between Elastic IPs the source is the EIP,
# not an address of the VPC).
resource "aws_vpc_security_group_ingress_rule" "gateway_wireguard_peer_b" {
  count = length(flatten(var.peer_gateway_b_ips))

  security_group_id = aws_security_group.gateway.id
  description       = "WireGuard from a peer gateway (b)"
  ip_protocol       = "udp"
  from_port         = var.listen_port
  to_port           = var.listen_port
  cidr_ipv4         = "${flatten(var.peer_gateway_b_ips)[count.index]}/32"

  tags = merge(local.tags, { Name = "${local.prefix}-wireguard-peer-b-${count.index}" })
}

resource "aws_vpc_security_group_ingress_rule" "gateway_wireguard_site" {
  count = var.ha ? 2 : 0

  security_group_id = aws_security_group.gateway.id
  description       = "WireGuard from this site's other gateway"
  ip_protocol       = "udp"
  from_port         = var.listen_port
  to_port           = var.listen_port
  cidr_ipv4         = "${concat([aws_eip.gateway.public_ip], aws_eip.gateway_b[*].public_ip)[count.index]}/32"

  tags = merge(local.tags, { Name = "${local.prefix}-wireguard-site-${count.index}" })
}

resource "aws_vpc_security_group_ingress_rule" "gateway_wireguard_extra" {
  for_each = toset(var.extra_wireguard_cidrs)

  security_group_id = aws_security_group.gateway.id
  description       = "WireGuard from an unmanaged peer"
  ip_protocol       = "udp"
  from_port         = var.listen_port
  to_port           = var.listen_port
  cidr_ipv4         = each.key

  tags = merge(local.tags, { Name = "${local.prefix}-wireguard-extra" })
}

resource "aws_vpc_security_group_ingress_rule" "gateway_ssh" {
  security_group_id = aws_security_group.gateway.id
  description       = "SSH from the operator"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = var.operator_cidr

  tags = merge(local.tags, { Name = "${local.prefix}-ssh" })
}

# Forwarded workload traffic (replies towards other sites) enters the
# gateway through its interface with the workload's own address.
resource "aws_vpc_security_group_ingress_rule" "gateway_vpc" {
  security_group_id = aws_security_group.gateway.id
  description       = "All traffic from the own VPC"
  ip_protocol       = "-1"
  cidr_ipv4         = local.vpc_cidr

  tags = merge(local.tags, { Name = "${local.prefix}-vpc" })
}

resource "aws_vpc_security_group_egress_rule" "gateway_all" {
  security_group_id = aws_security_group.gateway.id
  description       = "All outbound traffic"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"

  tags = merge(local.tags, { Name = "${local.prefix}-egress" })
}

# ipv6: the same for IPv6. The other sites' traffic reaches the gateway inside
# WireGuard (UDP from their Elastic IPs, above), in either family; what enters
# through its interface in the clear is the own VPC's (replies of workloads).
resource "aws_vpc_security_group_ingress_rule" "gateway_vpc6" {
  count = var.ipv6 ? 1 : 0

  security_group_id = aws_security_group.gateway.id
  description       = "All traffic from the own VPC (IPv6)"
  ip_protocol       = "-1"
  cidr_ipv6         = local.vpc_ipv6_cidr

  tags = merge(local.tags, { Name = "${local.prefix}-vpc6" })
}

resource "aws_security_group" "test" {
  count = var.test_instance ? 1 : 0

  name        = "${local.prefix}-test"
  description = "wgmesh test instance: all traffic from the own VPC and the other sites"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${local.prefix}-test" })
}

resource "aws_vpc_security_group_ingress_rule" "test_sites" {
  for_each = var.test_instance ? setunion([local.vpc_cidr], local.routed_cidrs) : toset([])

  security_group_id = aws_security_group.test[0].id
  description       = each.key == local.vpc_cidr ? "All traffic from the own VPC" : "All traffic from another site"
  ip_protocol       = "-1"
  cidr_ipv4         = each.key

  tags = merge(local.tags, { Name = "${local.prefix}-test-from-site" })
}

# ipv6: the own VPC's and the other sites' IPv6 CIDRs, as the IPv4 ones above
# (count: the other sites' are unknown until their VPCs exist).
resource "aws_vpc_security_group_ingress_rule" "test_sites6" {
  count = var.test_instance && var.ipv6 ? 1 + length(var.peer_vpc_ipv6_cidrs) : 0

  security_group_id = aws_security_group.test[0].id
  description       = count.index == 0 ? "All traffic from the own VPC (IPv6)" : "All traffic from another site (IPv6)"
  ip_protocol       = "-1"
  cidr_ipv6         = concat([local.vpc_ipv6_cidr], var.peer_vpc_ipv6_cidrs)[count.index]

  tags = merge(local.tags, { Name = "${local.prefix}-test-from-site6" })
}

resource "aws_vpc_security_group_egress_rule" "test_all" {
  count = var.test_instance ? 1 : 0

  security_group_id = aws_security_group.test[0].id
  description       = "All outbound traffic"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"

  tags = merge(local.tags, { Name = "${local.prefix}-test-egress" })
}

# ipv6, on both security groups (the gateway's and the test instance's): IPv6
# needs ICMPv6 from wherever a path leads (routers do not fragment, so Packet
# Too Big must reach the sender: path MTU discovery), and everything may go
# out in both families. ICMPv4 stays as it was (from the own VPC only).
locals {
  ipv6_groups = var.ipv6 ? merge(
    { gateway = aws_security_group.gateway.id },
    var.test_instance ? { test = aws_security_group.test[0].id } : {},
  ) : {}
}

resource "aws_vpc_security_group_ingress_rule" "icmpv6" {
  for_each = local.ipv6_groups

  security_group_id = each.value
  description       = "ICMPv6 (path MTU discovery, errors, echo)"
  ip_protocol       = "icmpv6"
  from_port         = -1
  to_port           = -1
  cidr_ipv6         = "::/0"

  tags = merge(local.tags, { Name = "${local.prefix}-${each.key}-icmpv6" })
}

resource "aws_vpc_security_group_egress_rule" "all6" {
  for_each = local.ipv6_groups

  security_group_id = each.value
  description       = "All outbound traffic (IPv6)"
  ip_protocol       = "-1"
  cidr_ipv6         = "::/0"

  tags = merge(local.tags, { Name = "${local.prefix}-${each.key}-egress6" })
}

# ---------------------------------------------------------------- ha: the route-switch role

# The role both gateways run as: the failover agent of the gateway that becomes
# active points the private route table's routes at its own interface.
data "aws_service_principal" "ec2" {
  count = var.ha ? 1 : 0

  service_name = "ec2"
}

resource "aws_iam_role" "gateway" {
  count = var.ha ? 1 : 0

  name        = "${local.prefix}-gateway"
  description = "wgmesh ${var.region} gateways: switch the private route table's routes to the active gateway"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = data.aws_service_principal.ec2[0].name }
      Action    = "sts:AssumeRole"
    }]
  })

  tags = merge(local.tags, { Name = "${local.prefix}-gateway" })
}

resource "aws_iam_role_policy" "route_switch" {
  count = var.ha ? 1 : 0

  name   = "${local.prefix}-route-switch"
  role   = aws_iam_role.gateway[0].id
  policy = local.route_switch_policy
}

resource "aws_iam_instance_profile" "gateway" {
  count = var.ha ? 1 : 0

  name = "${local.prefix}-gateway"
  role = aws_iam_role.gateway[0].name

  tags = merge(local.tags, { Name = "${local.prefix}-gateway" })
}

locals {
  route_switch_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "SwitchThePrivateRoutes"
        Effect   = "Allow"
        Action   = "ec2:ReplaceRoute"
        Resource = [aws_route_table.private.arn]
      },
      {
        # DescribeRouteTables supports no resource-level permission: AWS
        # accepts only "*" as its resource (it reads, it changes nothing).
        Sid      = "ReadTheRouteTables"
        Effect   = "Allow"
        Action   = "ec2:DescribeRouteTables"
        Resource = "*"
      },
    ]
  })
}

# ---------------------------------------------------------------- instances

resource "aws_key_pair" "this" {
  count = var.ssh_public_key != "" ? 1 : 0

  key_name   = local.prefix
  public_key = trimspace(var.ssh_public_key)

  tags = merge(local.tags, { Name = local.prefix })
}

resource "aws_instance" "gateway" {
  ami                    = local.ami
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.public.id
  vpc_security_group_ids = [aws_security_group.gateway.id]
  key_name               = local.key_name
  source_dest_check      = false # it forwards the other sites' traffic
  # ha only: the route-switch role (null: none, as before ha existed).
  iam_instance_profile = one(aws_iam_instance_profile.gateway[*].name)
  # ipv6: one IPv6 address (null: none, as before ipv6 existed).
  ipv6_address_count = var.ipv6 ? 1 : null
  # No associate_public_ip_address: the subnets never map public IPs, the
  # gateway's address is the Elastic IP below, and setting it to false makes
  # the provider replace the gateway on every plan once the EIP is attached
  # (it reads "an association exists" back as true;
  # hashicorp/terraform-provider-aws#37318).

  user_data                   = local.gateway_user_data
  user_data_replace_on_change = false

  root_block_device {
    volume_size           = 8
    volume_type           = "gp3"
    encrypted             = true
    delete_on_termination = true
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  tags        = merge(local.tags, { Name = "${local.prefix}-gateway" })
  volume_tags = merge(local.tags, { Name = "${local.prefix}-gateway" })

  lifecycle {
    # A newer Ubuntu image must not replace a running gateway (new host key,
    # tunnels down). Replace on purpose with `terraform apply -replace`.
    ignore_changes = [ami]
  }
}

# Separate from the instance, so the other regions can use the address
# (peer_gateway_ips) without a dependency cycle.
resource "aws_eip" "gateway" {
  domain = "vpc"

  tags = merge(local.tags, { Name = "${local.prefix}-gateway" })
}

resource "aws_eip_association" "gateway" {
  allocation_id = aws_eip.gateway.allocation_id
  instance_id   = aws_instance.gateway.id

  depends_on = [aws_internet_gateway.this, aws_route.public_default]
}

# ha: gateway b, in the second availability zone; everything else as gateway a.
resource "aws_instance" "gateway_b" {
  count = var.ha ? 1 : 0

  ami                    = local.ami
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.public_b[0].id
  vpc_security_group_ids = [aws_security_group.gateway.id]
  key_name               = local.key_name
  source_dest_check      = false
  iam_instance_profile   = aws_iam_instance_profile.gateway[0].name
  ipv6_address_count     = var.ipv6 ? 1 : null

  user_data                   = local.gateway_user_data
  user_data_replace_on_change = false

  root_block_device {
    volume_size           = 8
    volume_type           = "gp3"
    encrypted             = true
    delete_on_termination = true
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  tags        = merge(local.tags, { Name = "${local.prefix}-gateway-b" })
  volume_tags = merge(local.tags, { Name = "${local.prefix}-gateway-b" })

  lifecycle {
    ignore_changes = [ami]
  }
}

resource "aws_eip" "gateway_b" {
  count = var.ha ? 1 : 0

  domain = "vpc"

  tags = merge(local.tags, { Name = "${local.prefix}-gateway-b" })
}

resource "aws_eip_association" "gateway_b" {
  count = var.ha ? 1 : 0

  allocation_id = aws_eip.gateway_b[0].allocation_id
  instance_id   = aws_instance.gateway_b[0].id

  depends_on = [aws_internet_gateway.this, aws_route.public_default]
}

resource "aws_instance" "test" {
  count = var.test_instance ? 1 : 0

  ami                    = local.ami
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.private.id
  vpc_security_group_ids = [aws_security_group.test[0].id]
  key_name               = local.key_name
  ipv6_address_count     = var.ipv6 ? 1 : null

  root_block_device {
    volume_size           = 8
    volume_type           = "gp3"
    encrypted             = true
    delete_on_termination = true
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  tags        = merge(local.tags, { Name = "${local.prefix}-test" })
  volume_tags = merge(local.tags, { Name = "${local.prefix}-test" })

  lifecycle {
    ignore_changes = [ami]
  }
}
