# walletd's Google identity. Its pods run as the Kubernetes service accounts
# <k8s_namespace>/<k8s_service_accounts> in every cluster; Workload Identity maps each to this
# service account (one binding covers all clusters: they share the project's workload pool), which
# may connect to Cloud SQL through the Auth Proxy and log in as an IAM database user. It has no key.

resource "google_service_account" "walletd" {
  project      = var.project_id
  account_id   = "${var.name}-app"
  display_name = "walletd"
  description  = "walletd's pods (Workload Identity): Cloud SQL client and IAM database user."
}

resource "google_project_iam_member" "walletd" {
  for_each = toset([
    "roles/cloudsql.client",
    "roles/cloudsql.instanceUser",
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.walletd.email}"
}

resource "google_service_account_iam_member" "walletd_workload_identity" {
  for_each = toset(var.k8s_service_accounts)

  service_account_id = google_service_account.walletd.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.k8s_namespace}/${each.value}]"

  # The workload pool exists once a cluster with Workload Identity does.
  depends_on = [module.gke]
}
