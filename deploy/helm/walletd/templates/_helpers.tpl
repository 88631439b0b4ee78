{{/* Names ------------------------------------------------------------------------------------- */}}

{{- define "walletd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-walletd, or the release name alone when it already contains the chart's name. Kept to
     40 characters so that "<fullname>-<role>" stays within 63. */}}
{{- define "walletd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "walletd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ------------------------------------------------------------------------------------ */}}

{{- define "walletd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "walletd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "walletd.labels" -}}
helm.sh/chart: {{ include "walletd.chart" . }}
{{ include "walletd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: walletd
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* dict "root" $ "role" $role */}}
{{- define "walletd.roleSelectorLabels" -}}
{{ include "walletd.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role.name }}
{{- end -}}

{{- define "walletd.roleLabels" -}}
{{ include "walletd.labels" .root }}
app.kubernetes.io/component: {{ .role.name }}
walletd.io/kind: {{ .role.kind }}
{{- end -}}

{{- define "walletd.metadata" -}}
namespace: {{ .Release.Namespace }}
{{- end -}}

{{/* An object's annotations: commonAnnotations and the object's own. dict "root" $ "extra" (dict ...) */}}
{{- define "walletd.annotations" -}}
{{- $all := merge (deepCopy (.extra | default dict)) (.root.Values.commonAnnotations | default dict) -}}
{{- if $all -}}
{{- printf "annotations:\n%s" (toYaml $all | indent 2) | nindent 2 -}}
{{- end -}}
{{- end -}}

{{/* Image ------------------------------------------------------------------------------------- */}}

{{- define "walletd.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .Values.image.digest) -}}
{{- fail (printf "image.digest %q is not sha256:<64 hex digits>" .Values.image.digest) -}}
{{- end -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- if .Values.image.requireDigest -}}
{{- fail "image.requireDigest is true but image.digest is empty: deploy the image by its digest (--set image.digest=sha256:...)" -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "walletd.pullPolicy" -}}
{{- if .Values.image.pullPolicy -}}
{{- .Values.image.pullPolicy -}}
{{- else if .Values.image.digest -}}
IfNotPresent
{{- else -}}
Always
{{- end -}}
{{- end -}}

{{/* Secrets and databases --------------------------------------------------------------------- */}}

{{- define "walletd.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "walletd.fullname" .)) -}}
{{- end -}}

{{- define "walletd.jwtSecretName" -}}
{{- .Values.jwt.existingSecret | default (printf "%s-jwt" (include "walletd.fullname" .)) -}}
{{- end -}}

{{/* The Secret key holding a database's URL: its own when `databases.<db>` is true, else the main one.
     dict "root" $ "db" "supply" */}}
{{- define "walletd.dbKey" -}}
{{- if and (ne .db "main") (index .root.Values.databases .db) -}}
{{- printf "%s-database-url" .db -}}
{{- else -}}
database-url
{{- end -}}
{{- end -}}

{{/* The distinct database keys of the services, in a fixed order (one relay each). */}}
{{- define "walletd.serviceDbKeys" -}}
{{- $keys := list -}}
{{- range $svc := list "supply" "order" "claim" "wallet" -}}
{{- $keys = append $keys (include "walletd.dbKey" (dict "root" $ "db" $svc)) -}}
{{- end -}}
{{- toJson (uniq $keys) -}}
{{- end -}}

{{/* Roles ------------------------------------------------------------------------------------- */}}

{{/* Every Deployment of the release, as a list: name, kind (api, worker, relay, signer), the walletd
     arguments, the service it runs, whether it runs consumers, mounts the chains file, signs, may
     reach chain RPC; its database key; and `cfg`, its values block. */}}
{{- define "walletd.roles" -}}
{{- $roles := list -}}
{{- $chains := .Values.chains.enabled -}}
{{- range $svc := list "supply" "order" "claim" "wallet" -}}
{{- $cfg := index $.Values.api $svc -}}
{{- if $cfg.enabled -}}
{{- $roles = append $roles (dict "name" (printf "%s-api" $svc) "kind" "api" "service" $svc "args" (list "serve" "--services" $svc) "consumers" false "chains" (and $chains (eq $svc "wallet")) "signer" false "chainEgress" false "dbKey" (include "walletd.dbKey" (dict "root" $ "db" $svc)) "cfg" $cfg) -}}
{{- end -}}
{{- end -}}
{{- if .Values.claimWorker.enabled -}}
{{- $roles = append $roles (dict "name" "claim-worker" "kind" "worker" "service" "claim" "args" (list "serve" "--services" "claim") "consumers" true "chains" false "signer" false "chainEgress" false "dbKey" (include "walletd.dbKey" (dict "root" $ "db" "claim")) "cfg" .Values.claimWorker) -}}
{{- end -}}
{{- if .Values.walletWorker.enabled -}}
{{- $roles = append $roles (dict "name" "wallet-worker" "kind" "worker" "service" "wallet" "args" (list "serve" "--services" "wallet") "consumers" true "chains" $chains "signer" false "chainEgress" $chains "dbKey" (include "walletd.dbKey" (dict "root" $ "db" "wallet")) "cfg" .Values.walletWorker) -}}
{{- end -}}
{{- if and $chains .Values.chains.signer.enabled -}}
{{- $roles = append $roles (dict "name" "signer" "kind" "signer" "service" "wallet" "args" (list "serve" "--services" "wallet") "consumers" false "chains" true "signer" true "chainEgress" true "dbKey" (include "walletd.dbKey" (dict "root" $ "db" "wallet")) "cfg" .Values.chains.signer) -}}
{{- end -}}
{{- if .Values.relay.enabled -}}
{{- range $key := include "walletd.serviceDbKeys" $ | fromJsonArray -}}
{{- $db := ternary "main" (trimSuffix "-database-url" $key) (eq $key "database-url") -}}
{{- $roles = append $roles (dict "name" (printf "relay-%s" $db) "kind" "relay" "service" "" "args" (list "relay") "consumers" false "chains" false "signer" false "chainEgress" false "dbKey" $key "cfg" $.Values.relay) -}}
{{- end -}}
{{- end -}}
{{- toJson $roles -}}
{{- end -}}

{{/* The security contexts ------------------------------------------------------------------------ */}}

{{/* 65532 is distroless's nonroot user (deploy/Dockerfile). fsGroup lets it read the root-owned files
     of Secret volumes (mode 0400 becomes 0440 root:65532). */}}
{{- define "walletd.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "walletd.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The checkov findings that do not apply to a walletd workload, skipped where they arise, each with
     its reason (deploy/helm/walletd/CHECKOV.md lists them all). checkov reads
     "checkov.io/skipN: CHECK_ID=reason" annotations; the reason may not contain "=". */}}
{{- define "walletd.checkovSkips" -}}
{{- dict "checkov.io/skip1" "CKV_K8S_35=walletd reads its database and Redis URLs only from WALLETD_* environment variables (it has no _FILE variant), so they come from a Secret through secretKeyRef; the keys are mounted files unless chains.signer.keyDelivery is env (see values.yaml)" | toJson -}}
{{- end -}}

{{/* checksum of what the pods read at start, so that a change rolls them. */}}
{{- define "walletd.configChecksum" -}}
{{- $parts := list (include (print .Template.BasePath "/configmap.yaml") .) (include (print .Template.BasePath "/secret.yaml") .) (include (print .Template.BasePath "/chains.yaml") .) -}}
{{- join "\n" $parts | sha256sum -}}
{{- end -}}
