# A regional GKE Standard cluster for walletd: private nodes, Workload Identity, Dataplane V2
# (eBPF; Kubernetes NetworkPolicy always enforced), shielded nodes, Secrets encrypted in etcd with
# a KMS key, Binary Authorization enforcing the project's policy, and one separately managed,
# autoscaled node pool that runs as a least-privilege service account.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # GKE's service agent: it needs the KMS key to encrypt Secrets in etcd.
  gke_service_agent = "serviceAccount:service-${data.google_project.this.number}@container-engine-robot.iam.gserviceaccount.com"
  node_roles = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
    "roles/artifactregistry.reader",
  ])
}

# The nodes' own identity: only what nodes need (logs, metrics, pulling images). walletd's pods get
# their own Google identity through Workload Identity, never the node's.
resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-gke"
  display_name = "GKE nodes of ${var.name}"
  description  = "Least-privilege identity of the ${var.name} cluster's nodes (logging, monitoring, image pulls)."
}

resource "google_project_iam_member" "nodes" {
  for_each = local.node_roles

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

# Application-layer secrets encryption. KMS key rings cannot be deleted: a re-created cluster of the
# same name reuses (imports) the ring.
resource "google_kms_key_ring" "gke" {
  project  = var.project_id
  name     = "${var.name}-gke"
  location = var.region
}

resource "google_kms_crypto_key" "secrets" {
  name            = "etcd-secrets"
  key_ring        = google_kms_key_ring.gke.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.secrets_key_rotation_period
  labels          = var.labels

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_kms_crypto_key_iam_member" "gke_secrets" {
  crypto_key_id = google_kms_crypto_key.secrets.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.gke_service_agent
}

resource "google_container_cluster" "this" {
  # checkov:skip=CKV_GCP_21:false positive: resource_labels is merge(var.labels, ...), which checkov 3.3.30 cannot evaluate; the cluster always carries app, environment, managed-by and cluster labels
  project        = var.project_id
  name           = var.name
  description    = "walletd in ${var.region}"
  location       = var.region
  node_locations = var.zones

  network           = var.network_id
  subnetwork        = var.subnetwork_id
  networking_mode   = "VPC_NATIVE"
  datapath_provider = "ADVANCED_DATAPATH"

  # The default pool is removed at once; walletd runs on google_container_node_pool.walletd.
  remove_default_node_pool = true
  initial_node_count       = 1

  deletion_protection         = var.deletion_protection
  enable_legacy_abac          = false
  enable_shielded_nodes       = true
  enable_intranode_visibility = true
  resource_labels             = merge(var.labels, { cluster = var.name })

  logging_service    = "logging.googleapis.com/kubernetes"
  monitoring_service = "monitoring.googleapis.com/kubernetes"

  # Dataplane V2 enforces Kubernetes NetworkPolicy itself: the Calico network-policy add-on stays
  # off (GKE rejects both at once).
  network_policy {
    enabled = false
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = var.pods_range_name
    services_secondary_range_name = var.services_range_name
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block

    master_global_access_config {
      enabled = true
    }
  }

  master_authorized_networks_config {
    gcp_public_cidrs_access_enabled = false

    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  release_channel {
    channel = var.release_channel
  }

  # Admission checks images against the project's Binary Authorization policy (managed outside this
  # configuration: see README, "Binary Authorization").
  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  database_encryption {
    state    = "ENCRYPTED"
    key_name = google_kms_crypto_key.secrets.id
  }

  addons_config {
    # The NEG controller (standalone NEGs for the global load balancer) is part of this add-on.
    http_load_balancing {
      disabled = false
    }
    horizontal_pod_autoscaling {
      disabled = false
    }
  }

  vertical_pod_autoscaling {
    enabled = true
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = true
    }
  }

  maintenance_policy {
    daily_maintenance_window {
      start_time = var.maintenance_start_time
    }
  }

  dynamic "authenticator_groups_config" {
    for_each = var.authenticator_security_group == null ? [] : [var.authenticator_security_group]
    content {
      security_group = authenticator_groups_config.value
    }
  }

  # Only for the default pool that exists for the moments before it is removed: even it runs as the
  # least-privilege account, not the Compute Engine default one.
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    metadata = {
      disable-legacy-endpoints = "true"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }

  lifecycle {
    ignore_changes = [node_config, initial_node_count]
  }

  depends_on = [google_kms_crypto_key_iam_member.gke_secrets]
}

resource "google_container_node_pool" "walletd" {
  project        = var.project_id
  name           = "walletd"
  cluster        = google_container_cluster.this.id
  location       = var.region
  node_locations = var.zones

  initial_node_count = var.min_nodes_per_zone

  autoscaling {
    min_node_count  = var.min_nodes_per_zone
    max_node_count  = var.max_nodes_per_zone
    location_policy = "BALANCED"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    strategy        = "SURGE"
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.machine_type
    disk_size_gb    = var.disk_size_gb
    disk_type       = "pd-balanced"
    image_type      = "COS_CONTAINERD"
    service_account = google_service_account.nodes.email
    # Access is bounded by the service account's IAM roles; the broad scope is what Google advises.
    oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    tags         = [var.node_tag]
    labels       = var.labels

    metadata = {
      disable-legacy-endpoints = "true"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }

  lifecycle {
    # The autoscaler owns the node count after creation.
    ignore_changes = [initial_node_count]

    precondition {
      condition     = var.min_nodes_per_zone <= var.max_nodes_per_zone
      error_message = "min_nodes_per_zone must not exceed max_nodes_per_zone."
    }
  }

  depends_on = [google_project_iam_member.nodes]
}
