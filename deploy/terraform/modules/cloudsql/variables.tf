variable "project_id" {
  description = "The Google Cloud project of the instances."
  type        = string
}

variable "name" {
  description = "Prefix of the instance names: the primary is `<name>-<region>`, each replica `<name>-<its region>`. Cloud SQL keeps a deleted instance's name for up to a week."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{1,60}$", var.name))
    error_message = "name must start with a lowercase letter and hold only lowercase letters, digits and hyphens."
  }
}

variable "region" {
  description = "Region of the primary (read-write) instance."
  type        = string
}

variable "replica_regions" {
  description = "Regions that each get a cross-region read replica of the primary (never the primary's own region)."
  type        = list(string)
  default     = []
}

variable "network_id" {
  description = "ID of the VPC the instances get their private IP in (private service access must already be peered: pass the network module's private_service_network_id)."
  type        = string
}

variable "allocated_ip_range" {
  description = "Name of the private service access range the instances take their address from."
  type        = string
}

variable "ssl_mode" {
  description = "TLS policy of direct connections: TRUSTED_CLIENT_CERTIFICATE_REQUIRED (only clients with a certificate the instance trusts, such as the Cloud SQL Auth Proxy and connectors) or ENCRYPTED_ONLY (any TLS client)."
  type        = string
  default     = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"

  validation {
    condition     = contains(["TRUSTED_CLIENT_CERTIFICATE_REQUIRED", "ENCRYPTED_ONLY"], var.ssl_mode)
    error_message = "ssl_mode must be TRUSTED_CLIENT_CERTIFICATE_REQUIRED or ENCRYPTED_ONLY: plain-text connections are never allowed."
  }
}

variable "iam_service_accounts" {
  description = "Emails of the service accounts that log in as IAM database users (walletd's workload identity)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.iam_service_accounts : endswith(e, ".iam.gserviceaccount.com")])
    error_message = "iam_service_accounts must be service account emails (...@<project>.iam.gserviceaccount.com)."
  }
}

variable "database_version" {
  description = "Cloud SQL database version."
  type        = string
  default     = "POSTGRES_15"

  validation {
    condition     = can(regex("^POSTGRES_1[5-9]$", var.database_version))
    error_message = "database_version must be POSTGRES_15 or later (walletd runs on PostgreSQL)."
  }
}

variable "tier" {
  description = "Machine tier of the primary (a dedicated-core tier: shared-core tiers have no SLA)."
  type        = string
  default     = "db-custom-4-16384"

  validation {
    condition     = !contains(["db-f1-micro", "db-g1-small"], var.tier)
    error_message = "shared-core tiers (db-f1-micro, db-g1-small) are not for production."
  }
}

variable "replica_tier" {
  description = "Machine tier of the read replicas; null: the primary's."
  type        = string
  default     = null
}

variable "replica_availability_type" {
  description = "ZONAL, or REGIONAL to make each read replica highly available in its own region too."
  type        = string
  default     = "ZONAL"

  validation {
    condition     = contains(["ZONAL", "REGIONAL"], var.replica_availability_type)
    error_message = "replica_availability_type must be ZONAL or REGIONAL."
  }
}

variable "disk_size_gb" {
  description = "Initial disk size in GB (the disk grows automatically)."
  type        = number
  default     = 100

  validation {
    condition     = var.disk_size_gb >= 10
    error_message = "disk_size_gb must be at least 10."
  }
}

variable "databases" {
  description = "Databases on the primary: walletd gives each service its own (WALLETD_<SERVICE>_DATABASE_URL)."
  type        = list(string)
  default     = ["supply", "order", "claim", "wallet", "identity"]

  validation {
    condition     = length(var.databases) > 0 && alltrue([for d in var.databases : can(regex("^[a-z][a-z0-9_]{0,62}$", d))])
    error_message = "databases must be a non-empty list of lowercase identifiers."
  }
}

variable "backup_start_time" {
  description = "Start (UTC, HH:MM) of the daily backup window."
  type        = string
  default     = "02:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.backup_start_time))
    error_message = "backup_start_time must be HH:MM (24-hour clock)."
  }
}

variable "backup_location" {
  description = "Multi-region or region the backups are stored in (for example `us`); null: Cloud SQL's default, the multi-region nearest the primary."
  type        = string
  default     = null
}

variable "retained_backups" {
  description = "Number of daily backups kept."
  type        = number
  default     = 30

  validation {
    condition     = var.retained_backups >= 7 && var.retained_backups <= 365
    error_message = "retained_backups must be between 7 and 365."
  }
}

variable "transaction_log_retention_days" {
  description = "Days of write-ahead log kept for point-in-time recovery."
  type        = number
  default     = 7

  validation {
    condition     = var.transaction_log_retention_days >= 1 && var.transaction_log_retention_days <= 7
    error_message = "transaction_log_retention_days must be between 1 and 7 (the most an ENTERPRISE-edition instance keeps)."
  }
}

variable "maintenance_day" {
  description = "Day of the week (1 = Monday ... 7 = Sunday) of the maintenance window."
  type        = number
  default     = 7

  validation {
    condition     = var.maintenance_day >= 1 && var.maintenance_day <= 7
    error_message = "maintenance_day must be 1 (Monday) to 7 (Sunday)."
  }
}

variable "maintenance_hour" {
  description = "Hour (UTC) the maintenance window starts."
  type        = number
  default     = 4

  validation {
    condition     = var.maintenance_hour >= 0 && var.maintenance_hour <= 23
    error_message = "maintenance_hour must be 0 to 23."
  }
}

variable "extra_database_flags" {
  description = "More PostgreSQL flags (name => value), on the primary and the replicas, on top of the logging and audit flags this module sets (max_connections, for example)."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Whether the instances are protected from deletion (by Terraform and by the Cloud SQL API)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "User labels of the instances."
  type        = map(string)
  default     = {}
}
