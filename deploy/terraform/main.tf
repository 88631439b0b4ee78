# walletd's production layout on Google Cloud: one VPC, and in each region of var.regions a GKE
# cluster and a Memorystore Redis; a Cloud SQL PostgreSQL primary in var.primary_region with a read
# replica in every other region; Kafka (external brokers, or the managed service); and one global
# HTTPS load balancer in front of all the regions. README.md says how to apply it.

provider "google" {
  project        = var.project_id
  region         = var.primary_region
  default_labels = local.labels
}

locals {
  labels = merge(var.labels, {
    app         = "walletd"
    environment = var.environment
    managed-by  = "terraform"
  })
  replica_regions = sort([for region in keys(var.regions) : region if region != var.primary_region])
  # The tag of walletd's GKE nodes: the firewall lets the load balancer reach pods on them.
  gke_node_tag = "${var.name}-gke-node"
  # walletd's HTTP port (REST API and /health/*); the load balancer and its health check use it.
  app_port = 8080
  apis = toset(concat([
    "binaryauthorization.googleapis.com",
    "cloudkms.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "redis.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
  ], var.kafka_mode == "managed" ? ["managedkafka.googleapis.com"] : []))
}

resource "google_project_service" "apis" {
  for_each = local.apis

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

module "network" {
  source = "./modules/network"

  project_id   = var.project_id
  name         = var.name
  gke_node_tag = local.gke_node_tag
  app_port     = local.app_port
  subnets = {
    for region, r in var.regions : region => {
      ip_cidr_range       = r.subnet_cidr
      pods_cidr_range     = r.pods_cidr
      services_cidr_range = r.services_cidr
    }
  }

  depends_on = [google_project_service.apis]
}

module "gke" {
  source   = "./modules/gke"
  for_each = var.regions

  project_id                   = var.project_id
  name                         = "${var.name}-${each.key}"
  region                       = each.key
  zones                        = each.value.zones
  network_id                   = module.network.network_id
  subnetwork_id                = module.network.subnet_ids[each.key]
  pods_range_name              = module.network.pods_range_name
  services_range_name          = module.network.services_range_name
  master_ipv4_cidr_block       = each.value.master_cidr
  master_authorized_networks   = var.master_authorized_networks
  release_channel              = var.gke_release_channel
  machine_type                 = var.gke_machine_type
  min_nodes_per_zone           = var.gke_min_nodes_per_zone
  max_nodes_per_zone           = var.gke_max_nodes_per_zone
  node_tag                     = local.gke_node_tag
  authenticator_security_group = var.gke_authenticator_security_group
  deletion_protection          = var.deletion_protection
  labels                       = local.labels

  depends_on = [google_project_service.apis]
}

module "cloudsql" {
  source = "./modules/cloudsql"

  project_id           = var.project_id
  name                 = "${var.name}-pg"
  region               = var.primary_region
  replica_regions      = local.replica_regions
  network_id           = module.network.private_service_network_id
  allocated_ip_range   = module.network.private_service_range_name
  database_version     = var.sql_database_version
  tier                 = var.sql_tier
  replica_tier         = var.sql_replica_tier
  disk_size_gb         = var.sql_disk_size_gb
  databases            = var.sql_databases
  backup_location      = var.sql_backup_location
  ssl_mode             = var.sql_ssl_mode
  iam_service_accounts = [google_service_account.walletd.email]
  deletion_protection  = var.deletion_protection
  labels               = local.labels

  depends_on = [google_project_service.apis]
}

module "redis" {
  source   = "./modules/redis"
  for_each = var.regions

  project_id        = var.project_id
  name              = "${var.name}-${each.key}"
  region            = each.key
  network_id        = module.network.private_service_network_id
  reserved_ip_range = module.network.private_service_range_name
  memory_size_gb    = var.redis_memory_size_gb
  redis_version     = var.redis_version
  labels            = local.labels

  depends_on = [google_project_service.apis]
}

module "kafka" {
  source = "./modules/kafka"

  mode                       = var.kafka_mode
  external_bootstrap_servers = var.kafka_bootstrap_servers
  project_id                 = var.project_id
  name                       = "${var.name}-events"
  region                     = var.primary_region
  subnetwork_id              = module.network.subnet_ids[var.primary_region]
  vcpu_count                 = var.kafka_vcpu_count
  memory_gib                 = var.kafka_memory_gib
  topics                     = var.kafka_topics
  labels                     = local.labels

  depends_on = [google_project_service.apis]
}

module "lb" {
  source = "./modules/lb"

  project_id            = var.project_id
  name                  = var.name
  domains               = var.domains
  backends              = var.lb_backends
  default_backend       = var.lb_default_backend
  neg_zones             = var.attach_negs ? sort(flatten([for region in keys(var.regions) : module.gke[region].zones])) : []
  app_port              = local.app_port
  enable_cloud_armor    = var.enable_cloud_armor
  rate_limit_per_minute = var.rate_limit_per_minute
  labels                = local.labels

  depends_on = [google_project_service.apis]
}
