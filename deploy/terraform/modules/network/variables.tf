variable "project_id" {
  description = "The Google Cloud project that holds the network."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (the VPC is called this; subnets, routers and NATs add the region)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "subnets" {
  description = "One subnet per region, keyed by region: the nodes' primary range and the secondary ranges GKE takes for pods and services (VPC-native clusters)."
  type = map(object({
    ip_cidr_range       = string
    pods_cidr_range     = string
    services_cidr_range = string
  }))

  validation {
    condition = alltrue(flatten([
      for s in values(var.subnets) : [
        can(cidrhost(s.ip_cidr_range, 0)),
        can(cidrhost(s.pods_cidr_range, 0)),
        can(cidrhost(s.services_cidr_range, 0)),
      ]
    ]))
    error_message = "every ip_cidr_range, pods_cidr_range and services_cidr_range must be a CIDR block."
  }

  validation {
    condition     = length(var.subnets) > 0
    error_message = "at least one region's subnet is needed."
  }
}

variable "private_service_access_prefix_length" {
  description = "Size (prefix length) of the range reserved for private service access, shared by Cloud SQL and Memorystore in every region."
  type        = number
  default     = 16

  validation {
    condition     = var.private_service_access_prefix_length >= 8 && var.private_service_access_prefix_length <= 24
    error_message = "private_service_access_prefix_length must be between 8 and 24 (Google needs at least a /24)."
  }
}

variable "gke_node_tag" {
  description = "Network tag of the GKE nodes: the firewall lets Google's load-balancer health checks and proxies reach pods on these nodes."
  type        = string
}

variable "app_port" {
  description = "Container port walletd serves HTTP on (the load balancer's backends and health checks reach it through the NEGs)."
  type        = number
  default     = 8080

  validation {
    condition     = var.app_port > 0 && var.app_port < 65536
    error_message = "app_port must be a TCP port (1-65535)."
  }
}

variable "flow_log_sampling" {
  description = "Share (0 to 1) of the packets VPC flow logs sample on every subnet."
  type        = number
  default     = 0.5

  validation {
    condition     = var.flow_log_sampling > 0 && var.flow_log_sampling <= 1
    error_message = "flow_log_sampling must be above 0 and at most 1."
  }
}
