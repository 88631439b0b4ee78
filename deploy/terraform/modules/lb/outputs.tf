output "ip_address" {
  description = "The load balancer's anycast IPv4 address: point every domain's A record at it."
  value       = google_compute_global_address.this.address
}

output "backend_service_ids" {
  description = "ID of each backend service (their backends are walletd's NEGs)."
  value       = { for name, b in google_compute_backend_service.walletd : name => b.id }
}

output "backend_groups" {
  description = "NEGs each backend service sends traffic to (empty until neg_zones is set)."
  value       = local.neg_groups
}

output "certificate_name" {
  description = "Name of the Google-managed certificate."
  value       = google_compute_managed_ssl_certificate.this.name
}

output "security_policy_id" {
  description = "ID of the Cloud Armor policy; null when Cloud Armor is off."
  value       = var.enable_cloud_armor ? google_compute_security_policy.walletd[0].id : null
}
