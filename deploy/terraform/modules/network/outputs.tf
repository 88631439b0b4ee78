output "network_id" {
  description = "ID of the VPC (projects/P/global/networks/N)."
  value       = google_compute_network.this.id
}

output "network_self_link" {
  description = "Self link of the VPC."
  value       = google_compute_network.this.self_link
}

output "network_name" {
  description = "Name of the VPC."
  value       = google_compute_network.this.name
}

output "private_service_network_id" {
  description = "ID of the VPC, available only once private service access is peered: what Cloud SQL and Memorystore take, so that they wait for the peering."
  value       = google_compute_network.this.id
  depends_on  = [google_service_networking_connection.private_services]
}

output "private_service_range_name" {
  description = "Name of the range allocated to private service access (Cloud SQL allocated_ip_range, Memorystore reserved_ip_range)."
  value       = google_compute_global_address.private_services.name
}

output "subnet_ids" {
  description = "Subnet ID per region."
  value       = { for region, s in google_compute_subnetwork.region : region => s.id }
}

output "subnet_self_links" {
  description = "Subnet self link per region."
  value       = { for region, s in google_compute_subnetwork.region : region => s.self_link }
}

output "pods_range_name" {
  description = "Name of the secondary range of every subnet that GKE gives pods."
  value       = local.pods_range_name
}

output "services_range_name" {
  description = "Name of the secondary range of every subnet that GKE gives services."
  value       = local.services_range_name
}

output "nat_names" {
  description = "Cloud NAT gateway per region."
  value       = { for region, n in google_compute_router_nat.region : region => n.name }
}
