variable "name" {
  description = "Identifies the lab; every namespace is named wgm-<name>-*, the root-namespace veth wgm-<name>."
  type        = string
  default     = "lab"

  validation {
    condition     = can(regex("^[a-z0-9]{1,8}$", var.name))
    error_message = "name must be 1 to 8 characters of [a-z0-9]."
  }
}

variable "sites" {
  description = "Number of sites (gateway + private instance), exported in the peers output as site1..siteN."
  type        = number
  default     = 3

  validation {
    condition     = var.sites >= 1 && var.sites <= 200 && floor(var.sites) == var.sites
    error_message = "sites must be a whole number from 1 to 200."
  }
}

variable "servers" {
  description = "Number of extra hosts built like sites but NOT in the peers output (servers Terraform does not manage), exported as srv1..srvN in the servers output."
  type        = number
  default     = 1

  validation {
    condition     = var.servers >= 0 && var.servers <= 50 && floor(var.servers) == var.servers
    error_message = "servers must be a whole number from 0 to 50."
  }
}

variable "ha" {
  description = "Gateway high availability: every site gets two gateways, site<i>a and site<i>b (each its own public address, sshd, init), on one LAN with the site's private instance site<i>-vm, whose default route is the site's route table address (host 1 of the LAN, a VIP the active gateway's failover agent holds). Servers keep one gateway."
  type        = bool
  default     = false
  nullable    = false
}

variable "ipv6" {
  description = "Dual stack: every site and server LAN also gets an IPv6 /64 (from site_supernet6 / server_supernet6; gateway host 1, private instance host 10, the instance's IPv6 default route via the gateway). The underlay stays IPv4. Not with ha (an HA site's route table address is IPv4 only)."
  type        = bool
  default     = false
  nullable    = false
}

variable "wan_delay_ms" {
  description = "Distance: the lab router holds every packet it forwards this many milliseconds, controller <-> host and host <-> host alike (a round trip pays it twice), by a relay process in its namespace (labctl wan-delay; no netem). 0 = no delay and no relay. A change re-times the relay; the hosts stay."
  type        = number
  default     = 0
  nullable    = false

  validation {
    condition     = var.wan_delay_ms >= 0 && var.wan_delay_ms <= 1000 && floor(var.wan_delay_ms) == var.wan_delay_ms
    error_message = "wan_delay_ms must be a whole number of milliseconds from 0 to 1000."
  }
}

variable "underlay" {
  description = "The simulated internet: a /16 inside 198.18.0.0/15 (RFC 2544 benchmarking space), routed from the root namespace to the lab router."
  type        = string
  default     = "198.18.0.0/16"

  validation {
    condition     = contains(["198.18.0.0/16", "198.19.0.0/16"], var.underlay)
    error_message = "underlay must be a /16 inside 198.18.0.0/15: \"198.18.0.0/16\" or \"198.19.0.0/16\"."
  }
}

variable "init" {
  description = "What the gateways (sites and servers) run: \"plain\" = a network namespace with its own sshd (fast, the default); \"systemd\" = a real Debian 12 system booted with systemd as PID 1 (systemd-nspawn) in that namespace, sshd as its ssh.service. Private instances are always plain."
  type        = string
  default     = "plain"

  validation {
    condition     = contains(["plain", "systemd"], var.init)
    error_message = "init must be \"plain\" or \"systemd\"."
  }
}

variable "state_dir" {
  description = "Directory for the lab's files (controller key, host keys, sshd configs, pid files). Empty means /var/lib/wgmesh-lab/<name> (the machine's: every clone of the project plans the same hosts). Made absolute."
  type        = string
  default     = ""

  validation {
    condition     = !can(regex("[\\s\"'\\\\]", var.state_dir))
    error_message = "state_dir must not contain whitespace, quotes or backslashes."
  }
}

variable "site_supernet" {
  description = "Site i gets the subnet cidrsubnet(site_supernet, 8, i); its gateway is host 1, its private instance host 10."
  type        = string
  default     = "10.10.0.0/16"

  validation {
    condition = (
      can(cidrsubnet(var.site_supernet, 0, 0)) &&
      can(regex("^[0-9.]+/[0-9]+$", var.site_supernet)) &&
      try(cidrsubnet(var.site_supernet, 0, 0) == var.site_supernet, false) &&
      try(tonumber(split("/", var.site_supernet)[1]) >= 8 && tonumber(split("/", var.site_supernet)[1]) <= 20, false)
    )
    error_message = "site_supernet must be an IPv4 network address in CIDR form with a prefix length from /8 to /20, e.g. \"10.10.0.0/16\"."
  }
}

variable "server_supernet" {
  description = "Server k (0-based) gets the subnet cidrsubnet(server_supernet, 8, k + 1); its gateway is host 1, its private instance host 10."
  type        = string
  default     = "10.77.0.0/16"

  validation {
    condition = (
      can(cidrsubnet(var.server_supernet, 0, 0)) &&
      can(regex("^[0-9.]+/[0-9]+$", var.server_supernet)) &&
      try(cidrsubnet(var.server_supernet, 0, 0) == var.server_supernet, false) &&
      try(tonumber(split("/", var.server_supernet)[1]) >= 8 && tonumber(split("/", var.server_supernet)[1]) <= 20, false)
    )
    error_message = "server_supernet must be an IPv4 network address in CIDR form with a prefix length from /8 to /20, e.g. \"10.77.0.0/16\"."
  }
}

variable "site_supernet6" {
  description = "With ipv6: site i gets the IPv6 subnet cidrsubnet(site_supernet6, 64 - prefix length, i) (a /64); its gateway is host 1, its private instance host 10. A unique local (fc00::/7) prefix is masqueraded by wgmesh where it leaves a gateway; a global one is routed."
  type        = string
  default     = "fd10:10::/48"

  validation {
    condition = (
      can(cidrsubnet(var.site_supernet6, 0, 0)) &&
      can(regex("^[0-9A-Fa-f:]+/[0-9]+$", var.site_supernet6)) &&
      try(cidrhost("${split("/", var.site_supernet6)[0]}/128", 0) == cidrhost(var.site_supernet6, 0), false) &&
      try(tonumber(split("/", var.site_supernet6)[1]) >= 32 && tonumber(split("/", var.site_supernet6)[1]) <= 56, false)
    )
    error_message = "site_supernet6 must be an IPv6 network address in CIDR form with a prefix length from /32 to /56, e.g. \"fd10:10::/48\"."
  }
}

variable "server_supernet6" {
  description = "With ipv6: server k (0-based) gets the IPv6 subnet cidrsubnet(server_supernet6, 64 - prefix length, k + 1) (a /64); its gateway is host 1, its private instance host 10. A unique local (fc00::/7) prefix is masqueraded by wgmesh where it leaves a gateway; a global one is routed."
  type        = string
  default     = "fd10:77::/48"

  validation {
    condition = (
      can(cidrsubnet(var.server_supernet6, 0, 0)) &&
      can(regex("^[0-9A-Fa-f:]+/[0-9]+$", var.server_supernet6)) &&
      try(cidrhost("${split("/", var.server_supernet6)[0]}/128", 0) == cidrhost(var.server_supernet6, 0), false) &&
      try(tonumber(split("/", var.server_supernet6)[1]) >= 32 && tonumber(split("/", var.server_supernet6)[1]) <= 56, false)
    )
    error_message = "server_supernet6 must be an IPv6 network address in CIDR form with a prefix length from /32 to /56, e.g. \"fd10:77::/48\"."
  }
}
