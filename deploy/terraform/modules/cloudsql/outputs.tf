output "primary_name" {
  description = "Name of the primary instance."
  value       = google_sql_database_instance.primary.name
}

output "primary_connection_name" {
  description = "Connection name (project:region:instance) of the primary, for the Cloud SQL Auth Proxy or connectors."
  value       = google_sql_database_instance.primary.connection_name
}

output "primary_private_ip" {
  description = "Private IP of the primary (the host of the WALLETD_<SERVICE>_DATABASE_URL of writers)."
  value       = google_sql_database_instance.primary.private_ip_address
}

output "replica_connection_names" {
  description = "Connection name of the read replica in each replica region."
  value       = { for region, r in google_sql_database_instance.replica : region => r.connection_name }
}

output "replica_private_ips" {
  description = "Private IP of the read replica in each replica region."
  value       = { for region, r in google_sql_database_instance.replica : region => r.private_ip_address }
}

output "databases" {
  description = "Databases created on the primary (one per walletd service)."
  value       = sort([for d in google_sql_database.service : d.name])
}

output "iam_users" {
  description = "IAM database users (the PostgreSQL role names walletd logs in as through the Auth Proxy)."
  value       = sort([for u in google_sql_user.iam : u.name])
}
