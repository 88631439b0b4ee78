output "host" {
  description = "Private IP of the instance's primary endpoint."
  value       = google_redis_instance.this.host
}

output "port" {
  description = "Port of the instance (6378 with transit encryption)."
  value       = google_redis_instance.this.port
}

output "auth_string" {
  description = "AUTH string of the instance (the password of WALLETD_REDIS_URL=rediss://:<auth>@<host>:<port>)."
  value       = google_redis_instance.this.auth_string
  sensitive   = true
}

output "server_ca_certs" {
  description = "PEM certificates of the CA that signed the instance's TLS certificate (clients must trust them)."
  value       = [for c in google_redis_instance.this.server_ca_certs : c.cert]
}

output "id" {
  description = "ID of the instance."
  value       = google_redis_instance.this.id
}
