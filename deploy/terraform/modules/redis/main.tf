# Memorystore for Redis 7 in one region: STANDARD_HA (a replica in another zone with automatic
# failover), AUTH on, TLS in transit (clients use rediss:// on port 6378 and trust the instance's
# server CA), reached over private service access only. walletd keeps its rate limits and shared
# cache here; an RDB snapshot every hour shortens the warm-up after a full restart.

resource "google_redis_instance" "this" {
  project        = var.project_id
  name           = var.name
  display_name   = "walletd ${var.region}"
  region         = var.region
  tier           = "STANDARD_HA"
  memory_size_gb = var.memory_size_gb
  redis_version  = var.redis_version

  connect_mode       = "PRIVATE_SERVICE_ACCESS"
  authorized_network = var.network_id
  reserved_ip_range  = var.reserved_ip_range

  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"

  persistence_config {
    persistence_mode    = "RDB"
    rdb_snapshot_period = "ONE_HOUR"
  }

  maintenance_policy {
    weekly_maintenance_window {
      day = var.maintenance_day
      start_time {
        hours   = var.maintenance_hour
        minutes = 0
        seconds = 0
        nanos   = 0
      }
    }
  }

  labels = var.labels
}
