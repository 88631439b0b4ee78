# The VPC of the whole deployment: one global network, a subnet per region (with the GKE pod and
# service ranges as secondary ranges), a Cloud Router + Cloud NAT per region for the private nodes'
# egress (image pulls, the EVM chains' RPC endpoints), and private service access: one peering
# with Google's service producers, which Cloud SQL (private IP) and Memorystore (PRIVATE_SERVICE_ACCESS)
# both use.

locals {
  pods_range_name     = "pods"
  services_range_name = "services"
  # Google's front ends: the global external Application Load Balancer's proxies and health checks.
  google_lb_ranges = ["35.191.0.0/16", "130.211.0.0/22"]
}

resource "google_compute_network" "this" {
  project                         = var.project_id
  name                            = var.name
  auto_create_subnetworks         = false
  routing_mode                    = "GLOBAL"
  delete_default_routes_on_create = false
}

resource "google_compute_subnetwork" "region" {
  for_each = var.subnets

  project                  = var.project_id
  name                     = "${var.name}-${each.key}"
  region                   = each.key
  network                  = google_compute_network.this.id
  ip_cidr_range            = each.value.ip_cidr_range
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = local.pods_range_name
    ip_cidr_range = each.value.pods_cidr_range
  }

  secondary_ip_range {
    range_name    = local.services_range_name
    ip_cidr_range = each.value.services_cidr_range
  }

  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = var.flow_log_sampling
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "region" {
  for_each = var.subnets

  project = var.project_id
  name    = "${var.name}-${each.key}"
  region  = each.key
  network = google_compute_network.this.id
}

resource "google_compute_router_nat" "region" {
  for_each = var.subnets

  project                            = var.project_id
  name                               = "${var.name}-${each.key}"
  region                             = each.key
  router                             = google_compute_router.region[each.key].name
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.region[each.key].self_link
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Private service access: one allocated range, one peering; Cloud SQL and Memorystore instances in
# every region take their addresses from it (the VPC is global, so one range serves all regions).
resource "google_compute_global_address" "private_services" {
  project       = var.project_id
  name          = "${var.name}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = var.private_service_access_prefix_length
  network       = google_compute_network.this.id
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.this.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
  # Removing the peering while Cloud SQL or Memorystore instances still use it fails; on destroy,
  # Terraform forgets it and the project's deletion (or a manual step) removes it.
  deletion_policy = "ABANDON"
}

# Google's load-balancer proxies and health checks reach walletd's pods directly (container-native
# load balancing through NEGs), on the app port only.
resource "google_compute_firewall" "allow_lb_to_pods" {
  project     = var.project_id
  name        = "${var.name}-allow-lb-to-pods"
  network     = google_compute_network.this.id
  description = "Global external Application Load Balancer proxies and health checks to walletd pods (NEG backends)."
  direction   = "INGRESS"
  priority    = 1000

  source_ranges = local.google_lb_ranges
  target_tags   = [var.gke_node_tag]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.app_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
