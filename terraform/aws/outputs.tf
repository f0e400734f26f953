output "gateway_public_ip" {
  description = "The Elastic IP of this region's gateway (what the other regions allow to their WireGuard port)."
  value       = aws_eip.gateway.public_ip
}

output "gateway_b_public_ips" {
  description = "The Elastic IP of this region's second gateway, as a list: [] without ha (what the other regions allow to their WireGuard port besides gateway_public_ip)."
  value       = aws_eip.gateway_b[*].public_ip
}

output "vpc_ipv6_cidr" {
  description = "The IPv6 CIDR of this region's VPC with ipv6, else \"\" (what the other regions route to their gateway)."
  value       = local.vpc_ipv6_cidr
}

locals {
  # ipv6 only (a tuple indexed by a known bool: with ipv6 = false the peers are
  # exactly what they were before ipv6 existed).
  ipv6_index = var.ipv6 ? 1 : 0

  # What every peer of this region has in common.
  peer_common = {
    listen_port = var.listen_port
    # ipv6: [IPv4, IPv6]. Until the VPC exists its IPv6 CIDR is unknown, and
    # compact() makes the whole list unknown: a plan shows no subnets rather
    # than a null one, which wgmesh's check of the planned peers would refuse.
    subnets          = var.ipv6 ? compact([local.vpc_cidr, local.vpc_ipv6_cidr]) : [local.vpc_cidr]
    ssh_user         = var.ssh_user
    ssh_port         = 22
    ssh_key          = var.ssh_private_key_file == "" ? null : var.ssh_private_key_file
    ssh_host_keys    = []
    egress_interface = "detect"
    region           = var.region
    cloud            = "aws"
    instances = [for t in aws_instance.test : merge({
      name          = "${local.prefix}-test"
      address       = t.private_ip
      ssh_user      = var.ssh_user
      ssh_port      = 22
      ssh_host_keys = []
    }, [{}, { address6 = try(t.ipv6_addresses[0], null) }][local.ipv6_index])]
  }

  # Without ha: one peer, <name>-<region>, exactly as before ha existed.
  peers_single = {
    (local.prefix) = merge(local.peer_common, {
      endpoint        = aws_eip.gateway.public_ip
      private_address = aws_instance.gateway.private_ip
      ssh_host        = aws_eip.gateway.public_ip
    }, [{}, { private_address6 = try(aws_instance.gateway.ipv6_addresses[0], null) }][local.ipv6_index])
  }

  # With ha: the site <name>-<region> has two gateways, <site>-a and <site>-b,
  # each with the route table its failover agent switches to itself.
  gateways = concat(
    [{ key = "a", eip = aws_eip.gateway.public_ip, instance = aws_instance.gateway }],
    [for i, g in aws_instance.gateway_b : { key = "b", eip = aws_eip.gateway_b[i].public_ip, instance = g }],
  )
  peers_ha = { for g in local.gateways : "${local.prefix}-${g.key}" => merge(local.peer_common, {
    endpoint        = g.eip
    private_address = g.instance.private_ip
    ssh_host        = g.eip
    site            = local.prefix
    route_table = {
      kind                 = "aws"
      region               = var.region
      route_table_ids      = [aws_route_table.private.id]
      network_interface_id = g.instance.primary_network_interface_id
    }
  }, [{}, { private_address6 = try(g.instance.ipv6_addresses[0], null) }][local.ipv6_index]) }
}

output "peers" {
  description = "This region's gateways in the wgmesh Terraform output contract: <name>-<region>, or with ha <name>-<region>-a and -b (with site and route_table); the root module merges the regions."
  # A tuple indexed by a known bool, not a conditional: the two maps have
  # different keys and object types, which a conditional cannot unify.
  value = [local.peers_single, local.peers_ha][var.ha ? 1 : 0]

  # The endpoint is only reachable once the address is on the instance, and
  # the sites only once the routes exist.
  depends_on = [aws_eip_association.gateway, aws_eip_association.gateway_b, aws_route.to_site, aws_route.to_site6, aws_route_table_association.private]
}

output "info" {
  description = "Ids of what this region built (for tests and troubleshooting)."
  value = merge({
    vpc_id                 = aws_vpc.this.id
    vpc_cidr               = local.vpc_cidr
    public_subnet_id       = aws_subnet.public.id
    private_subnet_id      = aws_subnet.private.id
    gateway_instance_id    = aws_instance.gateway.id
    gateway_eni_id         = aws_instance.gateway.primary_network_interface_id
    security_group_id      = aws_security_group.gateway.id
    private_route_table_id = aws_route_table.private.id
    ami                    = aws_instance.gateway.ami
    }, [{}, {
      # ha only (a tuple indexed by a known bool: the two objects differ).
      availability_zones       = [local.availability_zone, local.availability_zone_b]
      public_subnet_b_id       = one(aws_subnet.public_b[*].id)
      gateway_b_instance_id    = one(aws_instance.gateway_b[*].id)
      gateway_b_eni_id         = one(aws_instance.gateway_b[*].primary_network_interface_id)
      iam_role_name            = one(aws_iam_role.gateway[*].name)
      instance_profile_name    = one(aws_iam_instance_profile.gateway[*].name)
      route_switch_policy_json = local.route_switch_policy
      }][var.ha ? 1 : 0], [{}, {
      # ipv6 only.
      vpc_ipv6_cidr             = local.vpc_ipv6_cidr
      public_subnet_ipv6_cidr   = aws_subnet.public.ipv6_cidr_block
      private_subnet_ipv6_cidr  = aws_subnet.private.ipv6_cidr_block
      public_subnet_b_ipv6_cidr = one(aws_subnet.public_b[*].ipv6_cidr_block)
      egress_only_gateway_id    = one(aws_egress_only_internet_gateway.this[*].id)
  }][local.ipv6_index])
}
