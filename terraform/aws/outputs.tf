output "gateway_public_ip" {
  description = "The Elastic IP of this region's gateway (what the other regions allow to their WireGuard port)."
  value       = aws_eip.gateway.public_ip
}

output "peers" {
  description = "This region's gateway in the wgmesh Terraform output contract (one entry, <name>-<region>); the root module merges the regions."
  value = {
    (local.prefix) = {
      endpoint         = aws_eip.gateway.public_ip
      listen_port      = var.listen_port
      private_address  = aws_instance.gateway.private_ip
      subnets          = [local.vpc_cidr]
      ssh_user         = var.ssh_user
      ssh_host         = aws_eip.gateway.public_ip
      ssh_port         = 22
      ssh_key          = var.ssh_private_key_file == "" ? null : var.ssh_private_key_file
      ssh_host_keys    = []
      egress_interface = "detect"
      region           = var.region
      cloud            = "aws"
      instances = [for t in aws_instance.test : {
        name          = "${local.prefix}-test"
        address       = t.private_ip
        ssh_user      = var.ssh_user
        ssh_port      = 22
        ssh_host_keys = []
      }]
    }
  }

  # The endpoint is only reachable once the address is on the instance, and
  # the sites only once the routes exist.
  depends_on = [aws_eip_association.gateway, aws_route.to_site, aws_route_table_association.private]
}

output "info" {
  description = "Ids of what this region built (for tests and troubleshooting)."
  value = {
    vpc_id                 = aws_vpc.this.id
    vpc_cidr               = local.vpc_cidr
    public_subnet_id       = aws_subnet.public.id
    private_subnet_id      = aws_subnet.private.id
    gateway_instance_id    = aws_instance.gateway.id
    gateway_eni_id         = aws_instance.gateway.primary_network_interface_id
    security_group_id      = aws_security_group.gateway.id
    private_route_table_id = aws_route_table.private.id
    ami                    = aws_instance.gateway.ami
  }
}
