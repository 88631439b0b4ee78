variable "project_id" {
  description = "The Google Cloud project of the cluster."
  type        = string
}

variable "name" {
  description = "Cluster name; the node service account is `<name>-gke` and the KMS key ring `<name>-gke`, so at most 26 characters."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{1,24}[a-z0-9]$", var.name))
    error_message = "name must be 3-26 characters of lowercase letters, digits and hyphens, starting with a letter (the node service account ID adds `-gke` and may not pass 30)."
  }
}

variable "region" {
  description = "Region of the regional cluster (its control plane is replicated across the region's zones)."
  type        = string
}

variable "zones" {
  description = "Zones of the region that run nodes (the node pool's autoscaling bounds are per zone); the load balancer's NEGs are looked for in these zones."
  type        = list(string)

  validation {
    condition     = length(var.zones) >= 2
    error_message = "a production cluster spreads its nodes over at least 2 zones."
  }
}

variable "network_id" {
  description = "ID of the VPC."
  type        = string
}

variable "subnetwork_id" {
  description = "ID of the region's subnet (with the pods and services secondary ranges)."
  type        = string
}

variable "pods_range_name" {
  description = "Name of the subnet's secondary range for pods."
  type        = string
}

variable "services_range_name" {
  description = "Name of the subnet's secondary range for services."
  type        = string
}

variable "master_ipv4_cidr_block" {
  description = "The /28 the control plane's private endpoint takes (unique across the VPC, outside every subnet)."
  type        = string

  validation {
    condition     = can(cidrhost(var.master_ipv4_cidr_block, 0)) && endswith(var.master_ipv4_cidr_block, "/28")
    error_message = "master_ipv4_cidr_block must be a /28 CIDR block."
  }
}

variable "master_authorized_networks" {
  description = "CIDR blocks allowed to reach the control plane's public endpoint (CI runners, a bastion, the operators' VPN). Empty: only Google Cloud internal addresses of the VPC."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []

  validation {
    condition     = alltrue([for n in var.master_authorized_networks : can(cidrhost(n.cidr_block, 0)) && n.cidr_block != "0.0.0.0/0"])
    error_message = "every master authorized network must be a CIDR block, and 0.0.0.0/0 is not allowed."
  }
}

variable "release_channel" {
  description = "GKE release channel the cluster follows (control plane and node auto-upgrades)."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "machine_type" {
  description = "Machine type of the walletd node pool."
  type        = string
  default     = "e2-standard-4"
}

variable "disk_size_gb" {
  description = "Boot disk size of each node, in GB."
  type        = number
  default     = 100

  validation {
    condition     = var.disk_size_gb >= 20
    error_message = "disk_size_gb must be at least 20."
  }
}

variable "min_nodes_per_zone" {
  description = "Fewest nodes the autoscaler keeps in each zone."
  type        = number
  default     = 1

  validation {
    condition     = var.min_nodes_per_zone >= 0
    error_message = "min_nodes_per_zone must be 0 or more."
  }
}

variable "max_nodes_per_zone" {
  description = "Most nodes the autoscaler adds in each zone."
  type        = number
  default     = 5

  validation {
    condition     = var.max_nodes_per_zone >= 1
    error_message = "max_nodes_per_zone must be 1 or more."
  }
}

variable "node_tag" {
  description = "Network tag the nodes carry (the network module's firewall lets the load balancer reach pods on nodes with it)."
  type        = string
}

variable "maintenance_start_time" {
  description = "Start (UTC, HH:MM) of the daily window in which GKE may upgrade the cluster."
  type        = string
  default     = "03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_start_time))
    error_message = "maintenance_start_time must be HH:MM (24-hour clock)."
  }
}

variable "authenticator_security_group" {
  description = "Google Group (gke-security-groups@<domain>) whose nested groups RBAC bindings may name (Google Groups for RBAC); null leaves it off (needs a Google Workspace / Cloud Identity domain)."
  type        = string
  default     = null
}

variable "secrets_key_rotation_period" {
  description = "Rotation period of the KMS key that encrypts Kubernetes Secrets in etcd (application-layer secrets encryption), in seconds with an `s` suffix."
  type        = string
  default     = "7776000s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.secrets_key_rotation_period)) && tonumber(trimsuffix(var.secrets_key_rotation_period, "s")) <= 7776000
    error_message = "secrets_key_rotation_period must be like `7776000s` and at most 90 days (7776000s)."
  }
}

variable "deletion_protection" {
  description = "Whether Terraform refuses to destroy the cluster."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels put on the cluster, its nodes and its KMS key."
  type        = map(string)
  default     = {}
}
