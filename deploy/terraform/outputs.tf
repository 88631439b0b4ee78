output "primary_region" {
  description = "Region of the Cloud SQL primary."
  value       = var.primary_region

  precondition {
    condition     = contains(keys(var.regions), var.primary_region)
    error_message = "primary_region must be one of the keys of regions."
  }
}

output "lb_ip_address" {
  description = "The global load balancer's IP: the A record of every domain in var.domains."
  value       = module.lb.ip_address
}

output "cluster_names" {
  description = "GKE cluster name per region."
  value       = { for region, gke in module.gke : region => gke.cluster_name }
}

output "cluster_endpoints" {
  description = "GKE control-plane endpoint per region."
  value       = { for region, gke in module.gke : region => gke.endpoint }
}

output "redis_hosts" {
  description = "Memorystore Redis host per region (TLS, port in redis_ports)."
  value       = { for region, redis in module.redis : region => redis.host }
}

output "redis_ports" {
  description = "Memorystore Redis port per region."
  value       = { for region, redis in module.redis : region => redis.port }
}

output "redis_auth_strings" {
  description = "Memorystore Redis AUTH string per region (for WALLETD_REDIS_URL; keep it in Secret Manager)."
  value       = { for region, redis in module.redis : region => redis.auth_string }
  sensitive   = true
}

output "sql_primary_connection_name" {
  description = "Connection name of the Cloud SQL primary (writes)."
  value       = module.cloudsql.primary_connection_name
}

output "sql_replica_connection_names" {
  description = "Connection name of the Cloud SQL read replica per replica region."
  value       = module.cloudsql.replica_connection_names
}

output "sql_databases" {
  description = "Databases on the primary, one per walletd service."
  value       = module.cloudsql.databases
}

output "sql_iam_users" {
  description = "IAM database users walletd logs in as (through the Cloud SQL Auth Proxy with --auto-iam-authn)."
  value       = module.cloudsql.iam_users
}

output "walletd_service_account" {
  description = "walletd's Google service account: annotate the Kubernetes service account with iam.gke.io/gcp-service-account=<this>."
  value       = google_service_account.walletd.email
}

output "kafka_bootstrap_servers" {
  description = "WALLETD_KAFKA_BROKERS: the external brokers, or the managed cluster's bootstrap address."
  value       = module.kafka.bootstrap_servers
}

output "regions" {
  description = "Everything per region in one map: cluster, Redis, and the Cloud SQL instance the region reads from (the primary in the primary region, its replica elsewhere)."
  value = {
    for region in keys(var.regions) : region => {
      cluster_name        = module.gke[region].cluster_name
      cluster_endpoint    = module.gke[region].endpoint
      redis_host          = module.redis[region].host
      redis_port          = module.redis[region].port
      sql_primary         = module.cloudsql.primary_connection_name
      sql_connection_name = region == var.primary_region ? module.cloudsql.primary_connection_name : module.cloudsql.replica_connection_names[region]
      sql_private_ip      = region == var.primary_region ? module.cloudsql.primary_private_ip : module.cloudsql.replica_private_ips[region]
    }
  }
}
