output "cluster_name" {
  description = "Name of the cluster."
  value       = google_container_cluster.this.name
}

output "cluster_id" {
  description = "ID of the cluster (projects/P/locations/R/clusters/N)."
  value       = google_container_cluster.this.id
}

output "endpoint" {
  description = "Address of the control plane's public endpoint (reachable from the master authorized networks only)."
  value       = google_container_cluster.this.endpoint
}

output "ca_certificate" {
  description = "Base64 PEM of the cluster's CA, for kubeconfig."
  value       = google_container_cluster.this.master_auth[0].cluster_ca_certificate
}

output "location" {
  description = "Region of the cluster."
  value       = google_container_cluster.this.location
}

output "zones" {
  description = "Zones that run nodes (where GKE's NEG controller creates the standalone NEGs)."
  value       = var.zones
}

output "node_service_account" {
  description = "Email of the nodes' service account."
  value       = google_service_account.nodes.email
}

output "workload_pool" {
  description = "Workload Identity pool: Kubernetes service accounts act as Google service accounts through `<pool>[<namespace>/<ksa>]` members."
  value       = "${var.project_id}.svc.id.goog"
}

output "node_pool_name" {
  description = "Name of the walletd node pool."
  value       = google_container_node_pool.walletd.name
}
