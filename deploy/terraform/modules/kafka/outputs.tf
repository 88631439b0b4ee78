output "mode" {
  description = "The Kafka mode in use (external or managed)."
  value       = var.mode
}

output "bootstrap_servers" {
  description = "Comma-separated bootstrap servers: the value of WALLETD_KAFKA_BROKERS."
  value       = local.managed ? local.managed_bootstrap : join(",", var.external_bootstrap_servers)

  precondition {
    condition     = local.managed || length(var.external_bootstrap_servers) > 0
    error_message = "mode external needs external_bootstrap_servers (HOST:PORT of the brokers)."
  }
}

output "cluster_id" {
  description = "ID of the managed cluster; null in mode external."
  value       = local.managed ? google_managed_kafka_cluster.this[0].id : null
}

output "topics" {
  description = "Topics Terraform created on the managed cluster (empty in mode external)."
  value       = sort(keys(google_managed_kafka_topic.this))
}
