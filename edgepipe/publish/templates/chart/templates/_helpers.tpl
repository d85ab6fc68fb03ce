{{/* The chart's name. */}}
{{- define "engine.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name. */}}
{{- define "engine.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "engine.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "engine.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels that select the engine pods. */}}
{{- define "engine.selectorLabels" -}}
app.kubernetes.io/name: edgepipe-engine
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Standard labels. */}}
{{- define "engine.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{ include "engine.selectorLabels" . }}
app.kubernetes.io/component: engine
app.kubernetes.io/part-of: edgepipe
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
edgepipe.io/pipeline: {{ index .Chart.Annotations "edgepipe.io/pipeline" | quote }}
{{- end }}

{{/* The engine image. An all-digit tag given with --set (int64) or in a values file
(float64, which would print as 2.024e+07) is written back as its digits. */}}
{{- define "engine.image" -}}
{{- $tag := .Values.image.tag }}
{{- if kindIs "float64" $tag }}{{ $tag = int64 $tag }}{{ end }}
{{- printf "%s:%s" .Values.image.repository (toString $tag) }}
{{- end }}
