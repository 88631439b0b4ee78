# Cloud SQL for PostgreSQL: a regional (highly available) primary with daily backups and
# point-in-time recovery, reachable only on its private IP, and a cross-region read replica in every
# other region. walletd's services each own a database on the primary.
#
# How walletd connects: its PostgreSQL client speaks no TLS (tokio-postgres with NoTls), so it
# connects in plain text to a Cloud SQL Auth Proxy sidecar on localhost, and the proxy connects to
# the instance's private IP with mutual TLS (ssl_mode TRUSTED_CLIENT_CERTIFICATE_REQUIRED refuses
# every connection without a client certificate, so nothing reaches the database but the proxy)
# and, with --auto-iam-authn, logs in as the IAM users below: no database password exists anywhere.
#
# Built-in (password) users are not managed here, so that no password lands in the Terraform state.

locals {
  replica_tier = coalesce(var.replica_tier, var.tier)
}

resource "google_sql_database_instance" "primary" {
  # checkov:skip=CKV_GCP_79:PostgreSQL 15 is the major version walletd is tested on (scripts/test-infra.sh); a major upgrade is a planned migration (database_version accepts 15 and later)
  # checkov:skip=CKV2_GCP_13:log_duration logs a line for every statement; Query Insights records statement latency without that log volume
  project             = var.project_id
  name                = "${var.name}-${var.region}"
  region              = var.region
  database_version    = var.database_version
  deletion_protection = var.deletion_protection

  settings {
    tier                        = var.tier
    edition                     = "ENTERPRISE"
    availability_type           = "REGIONAL"
    disk_type                   = "PD_SSD"
    disk_size                   = var.disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection
    user_labels                 = var.labels

    backup_configuration {
      enabled                        = true
      start_time                     = var.backup_start_time
      location                       = var.backup_location
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = var.transaction_log_retention_days

      backup_retention_settings {
        retained_backups = var.retained_backups
        retention_unit   = "COUNT"
      }
    }

    ip_configuration {
      ipv4_enabled       = false
      private_network    = var.network_id
      allocated_ip_range = var.allocated_ip_range
      ssl_mode           = var.ssl_mode
    }

    # Logging and audit flags (CIS PostgreSQL benchmark; checkov CKV_GCP_51..57, 108..111).
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_messages"
      value = "warning"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "pgaudit.log"
      value = "ddl,role"
    }
    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }
    dynamic "database_flags" {
      for_each = var.extra_database_flags
      content {
        name  = database_flags.key
        value = database_flags.value
      }
    }

    insights_config {
      query_insights_enabled  = true
      query_string_length     = 1024
      record_application_tags = true
      record_client_address   = false
    }

    maintenance_window {
      day          = var.maintenance_day
      hour         = var.maintenance_hour
      update_track = "stable"
    }
  }

  lifecycle {
    precondition {
      condition     = !contains(var.replica_regions, var.region)
      error_message = "replica_regions must not contain the primary's region."
    }
  }
}

resource "google_sql_database" "service" {
  for_each = toset(var.databases)

  project  = var.project_id
  name     = each.value
  instance = google_sql_database_instance.primary.name
  # PostgreSQL refuses to drop a database with open connections or dependent objects: on destroy,
  # Terraform forgets the database instead (the instance's deletion removes it).
  deletion_policy = "ABANDON"
}

# IAM database users (service accounts, logging in through the Cloud SQL Auth Proxy with
# --auto-iam-authn). They replicate to the read replicas. Their rights inside PostgreSQL (owning
# walletd's databases, for the migrations) are granted with SQL once: README, "Cloud SQL".
resource "google_sql_user" "iam" {
  for_each = toset(var.iam_service_accounts)

  project  = var.project_id
  instance = google_sql_database_instance.primary.name
  name     = trimsuffix(each.value, ".gserviceaccount.com")
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
}

# Cross-region read replicas: the regions' read traffic and the disaster-recovery targets (promote
# one with `gcloud sql instances promote-replica` if the primary's region is lost).
resource "google_sql_database_instance" "replica" {
  # checkov:skip=CKV_GCP_14:read replicas cannot take automated backups; the primary's backups and point-in-time recovery cover them
  # checkov:skip=CKV_GCP_79:PostgreSQL 15 is the major version walletd is tested on (scripts/test-infra.sh); a replica runs its primary's version
  # checkov:skip=CKV2_GCP_13:log_duration logs a line for every statement; Query Insights records statement latency without that log volume
  for_each = toset(var.replica_regions)

  project              = var.project_id
  name                 = "${var.name}-${each.value}"
  region               = each.value
  database_version     = var.database_version
  master_instance_name = google_sql_database_instance.primary.name
  deletion_protection  = var.deletion_protection

  settings {
    tier                        = local.replica_tier
    edition                     = "ENTERPRISE"
    availability_type           = var.replica_availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection
    user_labels                 = var.labels

    ip_configuration {
      ipv4_enabled       = false
      private_network    = var.network_id
      allocated_ip_range = var.allocated_ip_range
      ssl_mode           = var.ssl_mode
    }

    # Logging and audit flags (CIS PostgreSQL benchmark; checkov CKV_GCP_51..57, 108..111).
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_messages"
      value = "warning"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "pgaudit.log"
      value = "ddl,role"
    }
    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }
    dynamic "database_flags" {
      for_each = var.extra_database_flags
      content {
        name  = database_flags.key
        value = database_flags.value
      }
    }

    insights_config {
      query_insights_enabled  = true
      query_string_length     = 1024
      record_application_tags = true
      record_client_address   = false
    }

    maintenance_window {
      day          = var.maintenance_day
      hour         = var.maintenance_hour
      update_track = "stable"
    }
  }
}
