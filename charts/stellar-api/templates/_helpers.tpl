{{/* The release's name for its objects (the release name itself when it already says stellar-api). */}}
{{- define "stellar-api.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "stellar-api.selectorLabels" -}}
app.kubernetes.io/name: stellar-api
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "stellar-api.labels" -}}
{{ include "stellar-api.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stellar-pipeline
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stellar-api.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "stellar-api.fullname" .) }}
{{- end }}

{{/* Whether more than one pod runs, so that a disruption budget cannot block a node drain. */}}
{{- define "stellar-api.replicated" -}}
{{- if .Values.autoscaling.enabled }}{{ if gt (int .Values.autoscaling.minReplicas) 1 }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}
