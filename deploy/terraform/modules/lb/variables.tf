variable "project_id" {
  description = "The Google Cloud project of the load balancer."
  type        = string
}

variable "name" {
  description = "Prefix of every load-balancer resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{1,40}[a-z0-9]$", var.name))
    error_message = "name must be 3-42 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "domains" {
  description = "Domain names the managed certificate covers; each must resolve (A record) to the load balancer's IP before Google issues the certificate."
  type        = list(string)

  validation {
    condition     = length(var.domains) > 0 && length(var.domains) <= 100 && alltrue([for d in var.domains : can(regex("^([a-z0-9]([-a-z0-9]*[a-z0-9])?\\.)+[a-z]{2,}$", d))])
    error_message = "domains must hold 1 to 100 lowercase domain names (no wildcards: managed certificates do not support them)."
  }
}

variable "backends" {
  description = "walletd's REST backends, one backend service each: name => the name GKE's NEG controller gives that Kubernetes Service's standalone NEGs (annotation cloud.google.com/neg: {\"exposed_ports\": {\"8080\": {\"name\": \"<neg_name>\"}}}, the same in every zone and region), and the URL path patterns routed to it (like /v1/orders/*); the backend named default_backend also takes every other path."
  type = map(object({
    neg_name = string
    paths    = optional(list(string), [])
  }))
  default = {
    api = { neg_name = "walletd-http" }
  }

  validation {
    condition     = length(var.backends) > 0 && alltrue([for b in values(var.backends) : can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", b.neg_name))])
    error_message = "backends must not be empty, and every neg_name must be a valid resource name (RFC 1035, at most 63 characters)."
  }

  validation {
    condition     = alltrue(flatten([for b in values(var.backends) : [for p in b.paths : startswith(p, "/")]]))
    error_message = "every path pattern must start with /."
  }
}

variable "default_backend" {
  description = "The backend (a key of backends) that takes every path no other backend's paths match."
  type        = string
  default     = "api"
}

variable "neg_zones" {
  description = "Zones (over all regions) whose NEGs (each backend's neg_name) become backends. Empty: backend services without backends (the first apply, before the Kubernetes Services exist)."
  type        = list(string)
  default     = []
}

variable "app_port" {
  description = "Port the health check probes on the pods (walletd's HTTP port)."
  type        = number
  default     = 8080

  validation {
    condition     = var.app_port > 0 && var.app_port < 65536
    error_message = "app_port must be a TCP port (1-65535)."
  }
}

variable "health_check_path" {
  description = "Path of the HTTP health check: walletd's readiness (its dependencies answer)."
  type        = string
  default     = "/health/ready"

  validation {
    condition     = startswith(var.health_check_path, "/")
    error_message = "health_check_path must start with /."
  }
}

variable "max_rate_per_endpoint" {
  description = "Requests per second one pod is meant to take before the load balancer prefers other pods or regions (RATE balancing)."
  type        = number
  default     = 200

  validation {
    condition     = var.max_rate_per_endpoint > 0
    error_message = "max_rate_per_endpoint must be positive."
  }
}

variable "backend_timeout_sec" {
  description = "How long the load balancer waits for a response from walletd (walletd's own request timeout is 30 s)."
  type        = number
  default     = 35

  validation {
    condition     = var.backend_timeout_sec >= 1 && var.backend_timeout_sec <= 86400
    error_message = "backend_timeout_sec must be between 1 and 86400."
  }
}

variable "log_sample_rate" {
  description = "Share (0 to 1) of requests the backend service logs."
  type        = number
  default     = 1

  validation {
    condition     = var.log_sample_rate >= 0 && var.log_sample_rate <= 1
    error_message = "log_sample_rate must be between 0 and 1."
  }
}

variable "enable_cloud_armor" {
  description = "Whether a Cloud Armor policy (preconfigured WAF rules, a per-client-IP rate limit, adaptive protection) guards the backend service."
  type        = bool
  default     = true
}

variable "waf_preview" {
  description = "Whether the preconfigured WAF rule sets (SQLi, XSS, LFI, RCE, protocol attacks, scanners) only log (preview) instead of denying: for tuning false positives. The Log4j rule always denies."
  type        = bool
  default     = false
}

variable "rate_limit_per_minute" {
  description = "Requests per minute one client IP may send before Cloud Armor answers 429 (walletd also limits per principal)."
  type        = number
  default     = 6000

  validation {
    condition     = var.rate_limit_per_minute >= 1
    error_message = "rate_limit_per_minute must be 1 or more."
  }
}

variable "labels" {
  description = "Labels of the load balancer's address and forwarding rules."
  type        = map(string)
  default     = {}
}
