# walletd's event log: Kafka. Either external brokers (any Kafka-protocol cluster the operator runs
# or buys; their bootstrap servers pass through) or Google Cloud Managed Service for Apache Kafka.
#
# Mode `managed` needs SASL (OAUTHBEARER or PLAIN) over TLS on port 9092: walletd's Kafka settings
# (WALLETD_KAFKA_*) have no SASL/TLS options yet, so walletd cannot connect to a managed cluster
# until it has them. See README, "Kafka".

locals {
  managed = var.mode == "managed"
  # The provider (6.x) does not export the cluster's bootstrap address; this is its documented
  # (legacy-format) DNS name. Newer clusters may report another name in the API's
  # `bootstrapAddress` (`bootstrap-<id>....managedkafka.s.cloud.goog`): compare with
  # `gcloud managed-kafka clusters describe` after the first apply (README, "Kafka").
  managed_bootstrap = "bootstrap.${var.name}.${var.region}.managedkafka.${var.project_id}.cloud.goog:9092"
}

resource "google_managed_kafka_cluster" "this" {
  count = local.managed ? 1 : 0

  project    = var.project_id
  cluster_id = var.name
  location   = var.region

  capacity_config {
    vcpu_count   = var.vcpu_count
    memory_bytes = var.memory_gib * 1024 * 1024 * 1024
  }

  gcp_config {
    kms_key = var.kms_key
    access_config {
      network_configs {
        subnet = var.subnetwork_id
      }
    }
  }

  rebalance_config {
    mode = "AUTO_REBALANCE_ON_SCALE_UP"
  }

  labels = var.labels
}

resource "google_managed_kafka_topic" "this" {
  for_each = local.managed ? var.topics : {}

  project            = var.project_id
  topic_id           = each.key
  cluster            = google_managed_kafka_cluster.this[0].cluster_id
  location           = var.region
  partition_count    = each.value.partition_count
  replication_factor = each.value.replication_factor
  configs            = each.value.configs
}
