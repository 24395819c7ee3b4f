{{/* The chart's name, or nameOverride. */}}
{{- define "dbward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: fullnameOverride, else the release name when it contains the chart name
(`helm install dbward` gives `dbward`), else `<release>-<chart>`. 40 characters at most, so
that `<fullname>-controller` and `<fullname>-webhook-tls` stay valid names.
*/}}
{{- define "dbward.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dbward.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: name and instance only, so that they never change across upgrades. */}}
{{- define "dbward.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dbward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dbward.labels" -}}
helm.sh/chart: {{ include "dbward.chart" . }}
{{ include "dbward.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dbward
{{- end }}

{{- define "dbward.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dbward.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The webhook's Service; the serving certificate is issued for its DNS names. */}}
{{- define "dbward.webhookServiceName" -}}
{{- printf "%s-webhook" (include "dbward.fullname" .) }}
{{- end }}

{{/* Both webhook configurations (cluster-scoped) carry this name. */}}
{{- define "dbward.webhookConfigurationName" -}}
{{- include "dbward.fullname" . }}
{{- end }}

{{/* The Lease the replicas elect the controllers' leader through. */}}
{{- define "dbward.leaseName" -}}
{{- printf "%s-controller" (include "dbward.fullname" .) }}
{{- end }}

{{/* dbward's own CA (selfManaged) or cert-manager's CA Certificate. */}}
{{- define "dbward.caSecretName" -}}
{{- printf "%s-webhook-ca" (include "dbward.fullname" .) }}
{{- end }}

{{/* The Secret holding the serving certificate, whichever mode made it. */}}
{{- define "dbward.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "secret" }}
{{- required "certificates.secret.name is required in the secret mode" .Values.certificates.secret.name }}
{{- else }}
{{- printf "%s-webhook-tls" (include "dbward.fullname" .) }}
{{- end }}
{{- end }}

{{- define "dbward.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The clientConfig of one webhook: by URL (webhook.url) or through the Service. */}}
{{- define "dbward.clientConfig" -}}
{{- $root := index . 0 }}
{{- $path := index . 1 }}
{{- with $root.Values.webhook.url }}
url: {{ printf "%s%s" (trimSuffix "/" .) $path | quote }}
{{- else }}
service:
  name: {{ include "dbward.webhookServiceName" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ $path }}
  port: {{ $root.Values.webhook.service.port }}
{{- end }}
{{- if eq $root.Values.certificates.mode "secret" }}
caBundle: {{ required "certificates.secret.caBundle is required in the secret mode" $root.Values.certificates.secret.caBundle }}
{{- end }}
{{- end }}

{{/* Skips kube-system, the release namespace and namespaces labelled dbward.dev/webhook=skip. */}}
{{- define "dbward.namespaceSelector" -}}
{{- $skipped := list "kube-system" }}
{{- if ne .Release.Namespace "kube-system" }}
{{- $skipped = append $skipped .Release.Namespace }}
{{- end }}
{{- with .Values.webhook.namespaceSelector.matchLabels }}
matchLabels:
  {{- toYaml . | nindent 2 }}
{{- end }}
matchExpressions:
- key: kubernetes.io/metadata.name
  operator: NotIn
  values:
  {{- toYaml $skipped | nindent 2 }}
- key: dbward.dev/webhook
  operator: NotIn
  values:
  - skip
{{- with .Values.webhook.namespaceSelector.matchExpressions }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* dbward's kinds (plural resource names), as the webhook configurations and RBAC list them. */}}
{{- define "dbward.resources" -}}
- databaseservices
- databases
- serviceusers
- connectionpools
- databaseclaims
- postgresclusters
- databasequeryresources
- databaseopsrequests
- admissionpolicies
{{- end }}

{{/* Annotations of the webhook configurations. */}}
{{- define "dbward.webhookAnnotations" -}}
{{- if eq .Values.certificates.mode "certManager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "dbward.webhookServiceName" .) }}
{{- end }}
{{- end }}
