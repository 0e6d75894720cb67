{{/* Name of the chart, or nameOverride. */}}
{{- define "keymount.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects. */}}
{{- define "keymount.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "keymount.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "keymount.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "keymount.labels" -}}
app.kubernetes.io/name: {{ include "keymount.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select the DaemonSet's pods. */}}
{{- define "keymount.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keymount.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "keymount.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "keymount.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest of an image value. */}}
{{- define "keymount.image" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .appVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Enabled built-in providers, comma-separated (keymount --builtin-providers). */}}
{{- define "keymount.builtinProviders" -}}
{{- $names := list -}}
{{- range $name, $provider := .Values.builtinProviders -}}
{{- if $provider.enabled -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- join "," ($names | sortAlpha) -}}
{{- end -}}

{{/*
CSIDriver tokenRequests: the user's list, then the audiences of the enabled built-in providers
that the user did not list already. Rendered as a YAML list (empty string when none).
*/}}
{{- define "keymount.tokenRequests" -}}
{{- $requests := list -}}
{{- $seen := dict -}}
{{- range .Values.tokenRequests -}}
{{- $requests = append $requests . -}}
{{- $_ := set $seen .audience true -}}
{{- end -}}
{{- range $name, $provider := .Values.builtinProviders -}}
{{- if $provider.enabled -}}
{{- range $provider.audiences -}}
{{- if not (hasKey $seen .) -}}
{{- $requests = append $requests (dict "audience" .) -}}
{{- $_ := set $seen . true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $requests -}}
{{- toYaml $requests -}}
{{- end -}}
{{- end -}}

{{/* The kubelet's directory of this driver's socket. */}}
{{- define "keymount.pluginDir" -}}
{{- printf "%s/plugins/csi-secrets-store" .Values.linux.kubeletRootDir -}}
{{- end -}}

{{/* Name of the controller's Deployment, ServiceAccount and RBAC objects. */}}
{{- define "keymount.controllerName" -}}
{{- printf "%s-controller" (include "keymount.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels that select the controller's pods: a name of their own, so that the DaemonSet's
selector (and the PodDisruptionBudget's and metrics Service's) never takes them in.
*/}}
{{- define "keymount.controllerSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-controller" (include "keymount.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}
