variable "project_id" {
  description = "The Google Cloud project of the instance."
  type        = string
}

variable "name" {
  description = "Instance ID (1-40 characters)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{0,38}[a-z0-9]$", var.name))
    error_message = "name must be 2-40 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the instance (its primary and replica go to two zones of it)."
  type        = string
}

variable "network_id" {
  description = "ID of the VPC the instance is reached from (private service access must already be peered: pass the network module's private_service_network_id)."
  type        = string
}

variable "reserved_ip_range" {
  description = "Name of the private service access range the instance takes its address from."
  type        = string
}

variable "memory_size_gb" {
  description = "Memory of the instance, in GiB."
  type        = number
  default     = 5

  validation {
    condition     = var.memory_size_gb >= 1 && var.memory_size_gb <= 300
    error_message = "memory_size_gb must be between 1 and 300."
  }
}

variable "redis_version" {
  description = "Memorystore Redis version (7.x)."
  type        = string
  default     = "REDIS_7_2"

  validation {
    condition     = contains(["REDIS_7_0", "REDIS_7_2"], var.redis_version)
    error_message = "redis_version must be REDIS_7_0 or REDIS_7_2."
  }
}

variable "maintenance_day" {
  description = "Day of the weekly maintenance window (MONDAY ... SUNDAY)."
  type        = string
  default     = "SUNDAY"

  validation {
    condition     = contains(["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"], var.maintenance_day)
    error_message = "maintenance_day must be a day name in capitals (MONDAY ... SUNDAY)."
  }
}

variable "maintenance_hour" {
  description = "Hour (UTC) the weekly maintenance window starts."
  type        = number
  default     = 5

  validation {
    condition     = var.maintenance_hour >= 0 && var.maintenance_hour <= 23
    error_message = "maintenance_hour must be 0 to 23."
  }
}

variable "labels" {
  description = "Labels of the instance."
  type        = map(string)
  default     = {}
}
