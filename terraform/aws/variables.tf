# One region of the wgmesh AWS mesh. wgmesh renders the root module: one
# aliased `aws` provider and one call of this module per region, with region,
# index, regions and peer_gateway_ips filled in; every other variable is a
# user --var passed unchanged to every region (hence the per-region maps).

variable "region" {
  description = "The AWS region this module call manages (the region of the aws provider it is given)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.region))
    error_message = "region must be an AWS region name such as \"cn-north-1\" or \"eu-west-1\"."
  }
}

variable "index" {
  description = "Position of region in regions (0-based); region i gets the VPC CIDR cidrsubnet(vpc_supernet, vpc_newbits, i) unless vpc_cidrs names one."
  type        = number

  validation {
    condition     = var.index >= 0 && floor(var.index) == var.index
    error_message = "index must be a whole number from 0."
  }
}

variable "regions" {
  description = "Every region of the mesh, in order (the same list for every module call)."
  type        = list(string)

  validation {
    condition     = length(var.regions) >= 2
    error_message = "regions must list at least 2 regions: a mesh needs two sites."
  }

  validation {
    condition     = length(distinct(var.regions)) == length(var.regions)
    error_message = "regions must not list a region twice."
  }
}

variable "peer_gateway_ips" {
  description = "Public IPs (Elastic IPs) of the gateways of every OTHER region: the only sources allowed to the WireGuard port besides extra_wireguard_cidrs."
  type        = list(string)
  default     = []

  validation {
    # Unknown during the first plan (the other regions' EIPs): checked once known.
    condition     = alltrue([for ip in var.peer_gateway_ips : can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}$", ip)) && can(cidrhost("${ip}/32", 0))])
    error_message = "peer_gateway_ips must be IPv4 addresses (no prefix length)."
  }
}

variable "peer_gateway_b_ips" {
  description = "For every OTHER region, the Elastic IP of its second gateway (b) as a list: [] without ha, one address with ha. Also allowed to the WireGuard port."
  type        = list(list(string))
  default     = []

  validation {
    # Unknown during the first plan (the other regions' EIPs): checked once known.
    condition     = alltrue([for ip in flatten(var.peer_gateway_b_ips) : can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}$", ip)) && can(cidrhost("${ip}/32", 0))])
    error_message = "peer_gateway_b_ips must hold lists of IPv4 addresses (no prefix length)."
  }
}

variable "name" {
  description = "Prefix of the Name tags, of the imported key pair (<name>-<region>), of the IAM role and instance profile with ha (<name>-<region>-gateway) and of the peer name (<name>-<region>; with ha <name>-<region>-a and -b)."
  type        = string
  default     = "wgmesh"

  validation {
    condition     = can(regex("^[a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 1 to 20 characters of [a-z0-9-]."
  }
}

variable "vpc_supernet" {
  description = "Region i (its position in regions) gets the VPC CIDR cidrsubnet(vpc_supernet, vpc_newbits, i): 10.100.0.0/16, 10.101.0.0/16, 10.102.0.0/16, 10.103.0.0/16 by default (4 regions; for more, e.g. vpc_supernet = \"10.96.0.0/12\" with vpc_newbits = 4, or vpc_cidrs)."
  type        = string
  # Not 10.100.0.0/12: that has host bits set (the /12 is 10.96.0.0/12).
  default = "10.100.0.0/14"

  validation {
    condition = (
      can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", var.vpc_supernet)) &&
      try(cidrsubnet(var.vpc_supernet, 0, 0) == var.vpc_supernet, false)
    )
    error_message = "vpc_supernet must be an IPv4 network address in CIDR form (no host bits set), e.g. \"10.100.0.0/14\" or \"10.96.0.0/12\"."
  }
}

variable "vpc_newbits" {
  description = "Bits added to vpc_supernet's prefix for each region's VPC (the VPC prefix length must end up from /16 to /20); 2^vpc_newbits regions fit."
  type        = number
  default     = 2

  validation {
    condition     = var.vpc_newbits >= 1 && var.vpc_newbits <= 12 && floor(var.vpc_newbits) == var.vpc_newbits
    error_message = "vpc_newbits must be a whole number from 1 to 12."
  }
}

variable "vpc_cidrs" {
  description = "Optional region => VPC CIDR overrides (/16 to /20); regions not named use the vpc_supernet rule."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([for r, c in var.vpc_cidrs :
      can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", c)) && try(cidrsubnet(c, 0, 0) == c, false)
    ])
    error_message = "vpc_cidrs values must be IPv4 network addresses in CIDR form (no host bits set), e.g. { \"cn-north-1\" = \"10.120.0.0/16\" }."
  }
}

variable "availability_zones" {
  description = "Optional region => availability zone, or list of zones (the first for gateway a, the private subnet and the test instance; with ha, the second for gateway b). Otherwise the first available zones (by name) that offer instance_type, or the first available zones."
  # A zone or a list of zones per region: `any`, checked below (map(string) before ha; a
  # string still means one zone).
  type    = any
  default = {}

  validation {
    # (No short-circuit in Terraform: flatten([z]) reads a zone and a list alike.)
    condition = can(keys(var.availability_zones)) && try(alltrue([for r, z in var.availability_zones :
      alltrue([for x in flatten([z]) : can(regex("^[a-z0-9-]*$", x))])
    ]), false)
    error_message = "availability_zones must map a region to an availability zone or a list of zones, e.g. { \"cn-north-1\" = [\"cn-north-1a\", \"cn-north-1b\"] }."
  }
}

variable "ha" {
  description = "Gateway high availability: a second gateway (b) per region in a second availability zone, with its own Elastic IP, and an instance role on both gateways allowed only to switch the private route table's routes to the other sites (the wgmesh failover agent does it). false: exactly the single-gateway stack."
  type        = bool
  default     = false
}

variable "ipv6" {
  description = "Dual stack: an Amazon-provided IPv6 /56 per VPC, a /64 of it per subnet, an IPv6 address on the gateways and the test instance, the other sites' IPv6 VPC CIDRs routed to the gateway, IPv6 egress of the private subnet through an egress-only internet gateway, the security groups open for both families. The WireGuard underlay stays IPv4. false: exactly the IPv4 stack."
  type        = bool
  default     = false
}

variable "peer_vpc_ipv6_cidrs" {
  description = "With ipv6: the IPv6 VPC CIDR of every OTHER region (from their vpc_ipv6_cidr output; wgmesh fills it in), routed to the gateway and admitted by the test instance."
  type        = list(string)
  default     = []

  validation {
    # Unknown during the first plan (the other regions' VPCs): checked once known. "" without ipv6.
    condition     = alltrue([for c in var.peer_vpc_ipv6_cidrs : c == "" || (strcontains(c, ":") && can(cidrsubnet(c, 0, 0)))])
    error_message = "peer_vpc_ipv6_cidrs must be IPv6 CIDRs (or \"\" without ipv6)."
  }
}

variable "operator_cidr" {
  description = "The only source allowed to SSH (tcp 22) to the gateway: the network wgmesh runs from, e.g. \"203.0.113.7/32\"."
  type        = string

  validation {
    condition = (
      can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", var.operator_cidr)) &&
      try(cidrsubnet(var.operator_cidr, 0, 0) == var.operator_cidr, false)
    )
    error_message = "operator_cidr must be an IPv4 network address in CIDR form with no host bits set, e.g. \"203.0.113.7/32\" or \"203.0.113.0/24\"."
  }

  validation {
    condition     = !endswith(var.operator_cidr, "/0")
    error_message = "operator_cidr must not be a /0: SSH to the gateways is never open to the whole internet."
  }
}

variable "extra_wireguard_cidrs" {
  description = "Extra IPv4 sources (CIDRs) allowed to the WireGuard UDP port, for peers Terraform does not manage."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([for c in var.extra_wireguard_cidrs :
      can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", c)) && try(cidrsubnet(c, 0, 0) == c, false) && !endswith(c, "/0")
    ])
    error_message = "extra_wireguard_cidrs must be IPv4 network addresses in CIDR form, no host bits set and no /0, e.g. [\"198.51.100.7/32\"]."
  }
}

variable "extra_routed_cidrs" {
  description = "Extra IPv4 networks behind the mesh (e.g. subnets of unmanaged peers) that the private subnet routes to the gateway and the test instance accepts traffic from."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([for c in var.extra_routed_cidrs :
      can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", c)) && try(cidrsubnet(c, 0, 0) == c, false) && !endswith(c, "/0")
    ])
    error_message = "extra_routed_cidrs must be IPv4 network addresses in CIDR form, no host bits set and no /0, e.g. [\"10.77.1.0/24\"]."
  }
}

variable "listen_port" {
  description = "WireGuard UDP port of the gateways."
  type        = number
  default     = 51820

  validation {
    condition     = var.listen_port >= 1 && var.listen_port <= 65535 && floor(var.listen_port) == var.listen_port
    error_message = "listen_port must be a whole number from 1 to 65535."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the gateway and of the test instance."
  type        = string
  default     = "t3.micro"
}

variable "ami" {
  description = "AMI id for every region that amis does not name. Empty: the most recent Ubuntu 22.04 amd64 server image of the region (Canonical's owner id in the partition)."
  type        = string
  default     = ""

  validation {
    condition     = var.ami == "" || can(regex("^ami-[0-9a-z]+$", var.ami))
    error_message = "ami must be empty or an AMI id such as \"ami-0123456789abcdef0\"."
  }
}

variable "amis" {
  description = "Optional region => AMI id (AMI ids differ between regions)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for r, a in var.amis : a == "" || can(regex("^ami-[0-9a-z]+$", a))])
    error_message = "amis values must be AMI ids such as \"ami-0123456789abcdef0\"."
  }
}

variable "key_name" {
  description = "Name of an existing EC2 key pair (in every region). Exactly one of key_name and ssh_public_key must be set."
  type        = string
  default     = ""
}

variable "ssh_public_key" {
  description = "OpenSSH public key text, imported as the key pair <name>-<region>. Exactly one of key_name and ssh_public_key must be set."
  type        = string
  default     = ""

  validation {
    condition     = var.ssh_public_key == "" || can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( [^\\n]*)?$", trimspace(var.ssh_public_key)))
    error_message = "ssh_public_key must be one OpenSSH public key line: \"ssh-ed25519 AAAA... [comment]\" (ssh-ed25519, ssh-rsa or ecdsa-sha2-nistp*), not a private key."
  }
}

variable "ssh_private_key_file" {
  description = "Path of the private key that matches the key pair, reported in the peers output for wgmesh (never read by Terraform). Empty: null (wgmesh uses its defaults)."
  type        = string
  default     = ""
}

variable "ssh_user" {
  description = "SSH user of the AMI (ubuntu for Ubuntu images)."
  type        = string
  default     = "ubuntu"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user))
    error_message = "ssh_user must be a Unix user name, e.g. \"ubuntu\"."
  }
}

variable "test_instance" {
  description = "Also create a small instance in the private subnet (no public IP) that the mesh can probe."
  type        = bool
  default     = false
}
