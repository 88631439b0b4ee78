# The global external Application Load Balancer (EXTERNAL_MANAGED) in front of walletd in every
# region: one anycast IP, a Google-managed certificate, TLS 1.2+ with the MODERN profile, HTTP
# redirected to HTTPS, Cloud Armor, request logging, and container-native backends: the standalone
# zonal NEGs that GKE's NEG controller creates for walletd's Service in each zone of each cluster.
# Requests go to the nearest region with healthy capacity (RATE balancing per pod). walletd's API
# can be one backend, or one per walletd service (one Kubernetes Service each), routed by path.

locals {
  # A NEG the NEG controller created is addressed by zone and name; Terraform does not create it.
  neg_groups = {
    for name, b in var.backends : name => [
      for zone in var.neg_zones : "projects/${var.project_id}/zones/${zone}/networkEndpointGroups/${b.neg_name}"
    ]
  }
  # Backends that take paths of their own (the URL map's path rules).
  path_rules = { for name, b in var.backends : name => b.paths if length(b.paths) > 0 }
  # A managed certificate cannot change its domains: a new one (new name) replaces it.
  certificate_suffix = substr(sha1(join(",", sort(var.domains))), 0, 8)
}

resource "google_compute_global_address" "this" {
  project      = var.project_id
  name         = "${var.name}-lb"
  description  = "Anycast IP of walletd's global load balancer."
  address_type = "EXTERNAL"
  ip_version   = "IPV4"
  labels       = var.labels
}

resource "google_compute_managed_ssl_certificate" "this" {
  project = var.project_id
  name    = "${var.name}-${local.certificate_suffix}"

  managed {
    domains = var.domains
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_ssl_policy" "this" {
  project         = var.project_id
  name            = "${var.name}-tls"
  description     = "TLS 1.2 or later, MODERN cipher profile."
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_health_check" "walletd" {
  project             = var.project_id
  name                = "${var.name}-ready"
  description         = "walletd readiness: GET ${var.health_check_path} on port ${var.app_port}."
  check_interval_sec  = 5
  timeout_sec         = 3
  healthy_threshold   = 2
  unhealthy_threshold = 3

  http_health_check {
    port         = var.app_port
    request_path = var.health_check_path
  }

  log_config {
    enable = true
  }
}

resource "google_compute_security_policy" "walletd" {
  count = var.enable_cloud_armor ? 1 : 0

  project     = var.project_id
  name        = "${var.name}-armor"
  description = "walletd's edge policy: preconfigured WAF rules, a per-IP rate limit, adaptive protection."
  type        = "CLOUD_ARMOR"

  adaptive_protection_config {
    layer_7_ddos_defense_config {
      enable = true
    }
  }

  advanced_options_config {
    # Lets the WAF rules look inside walletd's JSON bodies.
    json_parsing = "STANDARD"
    log_level    = "NORMAL"
  }

  rule {
    description = "Log4j (CVE-2021-44228) probes."
    action      = "deny(403)"
    priority    = 900
    preview     = false
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('cve-canary')"
      }
    }
  }

  # Written out rule by rule (no dynamic block), so that reviewers and scanners see each one.
  rule {
    description = "SQL injection (preconfigured WAF rule set sqli-v33-stable, sensitivity 1)."
    action      = "deny(403)"
    priority    = 1000
    preview     = var.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('sqli-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  rule {
    description = "Cross-site scripting (preconfigured WAF rule set xss-v33-stable, sensitivity 1)."
    action      = "deny(403)"
    priority    = 1010
    preview     = var.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('xss-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  rule {
    description = "Local file inclusion (preconfigured WAF rule set lfi-v33-stable, sensitivity 1)."
    action      = "deny(403)"
    priority    = 1020
    preview     = var.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('lfi-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  rule {
    description = "Remote code execution (preconfigured WAF rule set rce-v33-stable, sensitivity 1)."
    action      = "deny(403)"
    priority    = 1030
    preview     = var.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('rce-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  rule {
    description = "HTTP protocol attacks (request smuggling, header injection) (preconfigured WAF rule set protocolattack-v33-stable, sensitivity 1)."
    action      = "deny(403)"
    priority    = 1040
    preview     = var.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('protocolattack-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  rule {
    description = "Known security scanners (preconfigured WAF rule set scannerdetection-v33-stable, sensitivity 1)."
    action      = "deny(403)"
    priority    = 1050
    preview     = var.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('scannerdetection-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  rule {
    description = "At most rate_limit_per_minute requests per minute from one client IP."
    action      = "throttle"
    priority    = 5000
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.rate_limit_per_minute
        interval_sec = 60
      }
    }
  }

  rule {
    description = "Default: allow."
    action      = "allow"
    priority    = 2147483647
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }
}

resource "google_compute_backend_service" "walletd" {
  for_each = var.backends

  project                         = var.project_id
  name                            = "${var.name}-${each.key}"
  description                     = "walletd's REST API (${each.key}) in every region (GKE standalone NEGs ${each.value.neg_name})."
  load_balancing_scheme           = "EXTERNAL_MANAGED"
  protocol                        = "HTTP"
  timeout_sec                     = var.backend_timeout_sec
  connection_draining_timeout_sec = 30
  health_checks                   = [google_compute_health_check.walletd.id]
  security_policy                 = var.enable_cloud_armor ? google_compute_security_policy.walletd[0].id : null

  dynamic "backend" {
    for_each = local.neg_groups[each.key]
    content {
      group                 = backend.value
      balancing_mode        = "RATE"
      max_rate_per_endpoint = var.max_rate_per_endpoint
    }
  }

  log_config {
    enable      = true
    sample_rate = var.log_sample_rate
  }
}

resource "google_compute_url_map" "https" {
  project         = var.project_id
  name            = "${var.name}-https"
  description     = "walletd's paths to their backends."
  default_service = google_compute_backend_service.walletd[var.default_backend].id

  dynamic "host_rule" {
    for_each = length(local.path_rules) > 0 ? ["*"] : []
    content {
      hosts        = [host_rule.value]
      path_matcher = "walletd"
    }
  }

  dynamic "path_matcher" {
    for_each = length(local.path_rules) > 0 ? ["walletd"] : []
    content {
      name            = path_matcher.value
      default_service = google_compute_backend_service.walletd[var.default_backend].id

      dynamic "path_rule" {
        for_each = local.path_rules
        content {
          paths   = path_rule.value
          service = google_compute_backend_service.walletd[path_rule.key].id
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = contains(keys(var.backends), var.default_backend)
      error_message = "default_backend must be one of the keys of backends."
    }
  }
}

resource "google_compute_target_https_proxy" "this" {
  project          = var.project_id
  name             = "${var.name}-https"
  url_map          = google_compute_url_map.https.id
  ssl_certificates = [google_compute_managed_ssl_certificate.this.id]
  ssl_policy       = google_compute_ssl_policy.this.id
}

resource "google_compute_global_forwarding_rule" "https" {
  project               = var.project_id
  name                  = "${var.name}-https"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_protocol           = "TCP"
  ip_address            = google_compute_global_address.this.id
  port_range            = "443"
  target                = google_compute_target_https_proxy.this.id
  labels                = var.labels
}

# Plain HTTP only redirects to HTTPS.
resource "google_compute_url_map" "http_redirect" {
  project     = var.project_id
  name        = "${var.name}-http-redirect"
  description = "HTTP to HTTPS."

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
}

resource "google_compute_target_http_proxy" "redirect" {
  project = var.project_id
  name    = "${var.name}-http-redirect"
  url_map = google_compute_url_map.http_redirect.id
}

resource "google_compute_global_forwarding_rule" "http" {
  project               = var.project_id
  name                  = "${var.name}-http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_protocol           = "TCP"
  ip_address            = google_compute_global_address.this.id
  port_range            = "80"
  target                = google_compute_target_http_proxy.redirect.id
  labels                = var.labels
}
