{{/* The chart's name. */}}
{{- define "edgepipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* A full name: the release name, with the chart name unless it is already in it. */}}
{{- define "edgepipe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "edgepipe.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "edgepipe.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels that select the operator pod. */}}
{{- define "edgepipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgepipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Standard labels. */}}
{{- define "edgepipe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "edgepipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: edgepipe
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount's name. */}}
{{- define "edgepipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgepipe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image tag as a string: an all-digit tag given with --set (int64) or in a values
file (float64, which would print as 2.024e+07) is written back as its digits. */}}
{{- define "edgepipe.tag" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if kindIs "float64" $tag }}{{ $tag = int64 $tag }}{{ end }}
{{- toString $tag }}
{{- end }}

{{/* The operator image. */}}
{{- define "edgepipe.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "edgepipe.tag" .) }}
{{- end }}

{{/* The engine image: operator.engineImage, else edgepipe-engine beside the operator image
(same registry and tag), as the two images are built and published together. */}}
{{- define "edgepipe.engineImage" -}}
{{- if .Values.operator.engineImage }}
{{- .Values.operator.engineImage }}
{{- else }}
{{- $repo := regexReplaceAll "edgepipe-operator$" .Values.image.repository "edgepipe-engine" }}
{{- printf "%s:%s" $repo (include "edgepipe.tag" .) }}
{{- end }}
{{- end }}

{{/* The namespaces the operator watches, comma-separated (watchNamespaces, and the older
operator.watchNamespace); empty: the whole cluster. */}}
{{- define "edgepipe.watchNamespaces" -}}
{{- $ns := .Values.watchNamespaces | default list -}}
{{- with .Values.operator.watchNamespace }}{{ $ns = append $ns . }}{{ end -}}
{{- $ns | uniq | join "," -}}
{{- end }}
