terraform {
  required_version = ">= 1.6.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50"
    }
  }

  # State: a GCS bucket (versioned, uniform bucket-level access, not public), with a partial
  # configuration so that no bucket name lives in the repository. Uncomment, then:
  #   terraform init -backend-config="bucket=<state-bucket>" -backend-config="prefix=walletd/prod"
  # (or keep the two settings in a backend.hcl that is not committed: -backend-config=backend.hcl).
  # Without it, `terraform init` keeps the state in a local file, which is only for trying things.
  #
  # backend "gcs" {}
}
