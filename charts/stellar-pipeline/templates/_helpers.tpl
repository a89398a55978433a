{{/* Labels every object of the chart carries (the Kubernetes recommended set). */}}
{{- define "stellar-pipeline.labels" -}}
app.kubernetes.io/name: stellar-pipeline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stellar-pipeline
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The S3 Secret the pods and the artifact repository read: the user's own, else the one this chart makes. */}}
{{- define "stellar-pipeline.s3Secret" -}}
{{- .Values.s3.existingSecret | default (include "stellar-pipeline.defaultS3Secret" .) -}}
{{- end }}
