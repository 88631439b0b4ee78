variable "mode" {
  description = "`external`: bring your own brokers (their bootstrap servers pass through); `managed`: Google Cloud Managed Service for Apache Kafka in the given region."
  type        = string
  default     = "external"

  validation {
    condition     = contains(["external", "managed"], var.mode)
    error_message = "mode must be external or managed."
  }
}

variable "external_bootstrap_servers" {
  description = "HOST:PORT of the external brokers (mode `external`); ignored in mode `managed`."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.external_bootstrap_servers : can(regex("^[A-Za-z0-9._-]+:[0-9]{1,5}$", s))])
    error_message = "every external bootstrap server must be HOST:PORT."
  }
}

variable "project_id" {
  description = "The Google Cloud project of the managed cluster."
  type        = string
}

variable "name" {
  description = "Cluster ID of the managed cluster (mode `managed`)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", var.name))
    error_message = "name must be 1-63 characters of lowercase letters, digits and hyphens, starting with a letter (RFC 1035)."
  }
}

variable "region" {
  description = "Region of the managed cluster."
  type        = string
}

variable "subnetwork_id" {
  description = "Subnet (projects/P/regions/R/subnetworks/S, in the cluster's region) where the managed cluster's broker and bootstrap addresses are created."
  type        = string
}

variable "vcpu_count" {
  description = "vCPUs of the managed cluster (3 at least)."
  type        = number
  default     = 3

  validation {
    condition     = var.vcpu_count >= 3
    error_message = "vcpu_count must be 3 or more."
  }
}

variable "memory_gib" {
  description = "Memory of the managed cluster in GiB (1 to 8 GiB per vCPU)."
  type        = number
  default     = 12

  validation {
    condition     = var.memory_gib >= 3
    error_message = "memory_gib must be at least 3 (1 GiB per vCPU, 3 vCPUs at least)."
  }
}

variable "kms_key" {
  description = "KMS key (projects/P/locations/R/keyRings/K/cryptoKeys/C) that encrypts the managed cluster's data; null: Google-managed encryption."
  type        = string
  default     = null
}

variable "topics" {
  description = "Topics Terraform creates on the managed cluster (walletd also creates missing topics itself at start-up: `<topic>` and `<topic>.dlq`)."
  type = map(object({
    partition_count    = number
    replication_factor = optional(number, 3)
    configs            = optional(map(string), {})
  }))
  default = {}
}

variable "labels" {
  description = "Labels of the managed cluster."
  type        = map(string)
  default     = {}
}
