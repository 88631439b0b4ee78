variable "project_id" {
  description = "The Google Cloud project walletd runs in."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID (6-30 lowercase letters, digits and hyphens, starting with a letter)."
  }
}

variable "name" {
  description = "Prefix of every resource's name (clusters are `<name>-<region>`)."
  type        = string
  default     = "walletd"

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{1,8}[a-z0-9]$", var.name))
    error_message = "name must be 3-10 lowercase letters, digits and hyphens, starting with a letter (longer names overflow the 30-character service account IDs)."
  }
}

variable "environment" {
  description = "Environment label put on every resource."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.environment))
    error_message = "environment must be a lowercase label value."
  }
}

variable "labels" {
  description = "Extra labels put on every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "primary_region" {
  description = "The region of the Cloud SQL primary (writes) and, in mode managed, of the Kafka cluster; one of the keys of `regions`."
  type        = string
  default     = "us-east1"
}

variable "regions" {
  description = "The regions walletd runs in, keyed by Google Cloud region: the zones that run nodes, the subnet's node range, the GKE pod and service ranges, and the /28 of the GKE control plane. Every range must be unique in the VPC."
  type = map(object({
    zones         = list(string)
    subnet_cidr   = string
    pods_cidr     = string
    services_cidr = string
    master_cidr   = string
  }))
  default = {
    "us-east1" = {
      zones         = ["us-east1-b", "us-east1-c", "us-east1-d"]
      subnet_cidr   = "10.10.0.0/20"
      pods_cidr     = "10.20.0.0/16"
      services_cidr = "10.30.0.0/20"
      master_cidr   = "172.16.0.0/28"
    }
    "europe-west1" = {
      zones         = ["europe-west1-b", "europe-west1-c", "europe-west1-d"]
      subnet_cidr   = "10.11.0.0/20"
      pods_cidr     = "10.21.0.0/16"
      services_cidr = "10.31.0.0/20"
      master_cidr   = "172.16.0.16/28"
    }
    "asia-southeast1" = {
      zones         = ["asia-southeast1-a", "asia-southeast1-b", "asia-southeast1-c"]
      subnet_cidr   = "10.12.0.0/20"
      pods_cidr     = "10.22.0.0/16"
      services_cidr = "10.32.0.0/20"
      master_cidr   = "172.16.0.32/28"
    }
  }

  validation {
    condition     = length(var.regions) >= 1 && alltrue([for r, c in var.regions : alltrue([for z in c.zones : startswith(z, "${r}-")])])
    error_message = "regions must not be empty, and every zone must be in its region (like us-east1-b for us-east1)."
  }

  validation {
    condition     = length(distinct(flatten([for c in values(var.regions) : [c.subnet_cidr, c.pods_cidr, c.services_cidr, c.master_cidr]]))) == 4 * length(var.regions)
    error_message = "every subnet, pods, services and master CIDR block must be distinct."
  }
}

# GKE

variable "master_authorized_networks" {
  description = "CIDR blocks that may reach the GKE control planes' public endpoints (CI, operators' VPN). Empty: none from outside Google Cloud."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []
}

variable "gke_release_channel" {
  description = "GKE release channel of the clusters."
  type        = string
  default     = "REGULAR"
}

variable "gke_machine_type" {
  description = "Machine type of the walletd node pools."
  type        = string
  default     = "e2-standard-4"
}

variable "gke_min_nodes_per_zone" {
  description = "Fewest nodes per zone of each cluster's node pool."
  type        = number
  default     = 1
}

variable "gke_max_nodes_per_zone" {
  description = "Most nodes per zone of each cluster's node pool."
  type        = number
  default     = 5
}

variable "gke_authenticator_security_group" {
  description = "gke-security-groups@<domain> for Google Groups for RBAC; null: off."
  type        = string
  default     = null
}

variable "k8s_namespace" {
  description = "Kubernetes namespace walletd runs in (every cluster)."
  type        = string
  default     = "walletd"
}

variable "k8s_service_accounts" {
  description = "Kubernetes service accounts (in k8s_namespace) of walletd's pods that connect to Cloud SQL; Workload Identity maps each to the walletd Google service account."
  type        = list(string)
  default     = ["walletd"]

  validation {
    condition     = length(var.k8s_service_accounts) > 0
    error_message = "k8s_service_accounts must name at least one Kubernetes service account."
  }
}

# Cloud SQL

variable "sql_database_version" {
  description = "Cloud SQL database version."
  type        = string
  default     = "POSTGRES_15"
}

variable "sql_tier" {
  description = "Machine tier of the Cloud SQL primary."
  type        = string
  default     = "db-custom-4-16384"
}

variable "sql_replica_tier" {
  description = "Machine tier of the read replicas; null: the primary's."
  type        = string
  default     = null
}

variable "sql_disk_size_gb" {
  description = "Initial disk size of the Cloud SQL instances, in GB (it grows automatically)."
  type        = number
  default     = 100
}

variable "sql_databases" {
  description = "The databases on the primary, one per walletd service (WALLETD_<SERVICE>_DATABASE_URL)."
  type        = list(string)
  default     = ["supply", "order", "claim", "wallet", "identity"]
}

variable "sql_ssl_mode" {
  description = "TLS policy of direct Cloud SQL connections (TRUSTED_CLIENT_CERTIFICATE_REQUIRED: only the Auth Proxy and connectors; ENCRYPTED_ONLY: any TLS client)."
  type        = string
  default     = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
}

variable "sql_backup_location" {
  description = "Where Cloud SQL keeps backups (a multi-region like `us`, or a region); null: the default multi-region nearest the primary."
  type        = string
  default     = null
}

# Memorystore

variable "redis_memory_size_gb" {
  description = "Memory of each region's Redis instance, in GiB."
  type        = number
  default     = 5
}

variable "redis_version" {
  description = "Memorystore Redis version."
  type        = string
  default     = "REDIS_7_2"
}

# Kafka

variable "kafka_mode" {
  description = "`external`: walletd uses brokers the operator provides (kafka_bootstrap_servers); `managed`: a Google Cloud Managed Service for Apache Kafka cluster in the primary region (walletd needs SASL/TLS support for it first: README, \"Kafka\")."
  type        = string
  default     = "external"

  validation {
    condition     = contains(["external", "managed"], var.kafka_mode)
    error_message = "kafka_mode must be external or managed."
  }
}

variable "kafka_bootstrap_servers" {
  description = "HOST:PORT of the external Kafka brokers (kafka_mode external)."
  type        = list(string)
  default     = []
}

variable "kafka_vcpu_count" {
  description = "vCPUs of the managed Kafka cluster (kafka_mode managed)."
  type        = number
  default     = 3
}

variable "kafka_memory_gib" {
  description = "Memory of the managed Kafka cluster in GiB (kafka_mode managed)."
  type        = number
  default     = 12
}

variable "kafka_topics" {
  description = "Topics Terraform creates on the managed Kafka cluster (kafka_mode managed); walletd creates missing ones itself."
  type = map(object({
    partition_count    = number
    replication_factor = optional(number, 3)
    configs            = optional(map(string), {})
  }))
  default = {}
}

# Load balancer

variable "domains" {
  description = "Domain names of walletd's API (the managed certificate covers them)."
  type        = list(string)
}

variable "lb_backends" {
  description = "walletd's REST backends behind the load balancer: name => the NEG name its Kubernetes Service's annotation gives (cloud.google.com/neg exposed_ports), and the URL path patterns routed to it. One backend takes everything by default."
  type = map(object({
    neg_name = string
    paths    = optional(list(string), [])
  }))
  default = {
    api = { neg_name = "walletd-http" }
  }
}

variable "lb_default_backend" {
  description = "The backend (a key of lb_backends) that takes every path no other backend's paths match."
  type        = string
  default     = "api"
}

variable "attach_negs" {
  description = "Whether the NEGs become the load balancer's backends. Keep false until walletd's Services exist in every cluster (so every NEG exists), then set true."
  type        = bool
  default     = false
}

variable "enable_cloud_armor" {
  description = "Whether Cloud Armor guards the load balancer."
  type        = bool
  default     = true
}

variable "rate_limit_per_minute" {
  description = "Requests per minute one client IP may send before Cloud Armor answers 429."
  type        = number
  default     = 6000
}

variable "deletion_protection" {
  description = "Whether the GKE clusters and Cloud SQL instances are protected from deletion."
  type        = bool
  default     = true
}
