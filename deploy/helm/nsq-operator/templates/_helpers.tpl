{{/* The chart name, or nameOverride. */}}
{{- define "nsq-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "nsq-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on everything the chart makes. */}}
{{- define "nsq-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "nsq-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's pod; they never change across upgrades. */}}
{{- define "nsq-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nsq-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "nsq-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nsq-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The leader-election Lease: one per release, so two releases in one namespace never share it. */}}
{{- define "nsq-operator.leaseName" -}}
{{- include "nsq-operator.fullname" . }}
{{- end }}

{{/*
The namespaced rights the operator needs wherever it watches NsqConsumers: read them and write their
status, own their worker Deployments, and record events. It lists its workers' pods and their
events, read only, to say why a worker is not ready (a missing Secret, an image that cannot be
pulled, a worker that exits at once). It never reads Secrets: worker pods get them by secretKeyRef
and Secret volumes, which the kubelet resolves.
*/}}
{{- define "nsq-operator.namespacedRules" -}}
- apiGroups: ["nsqoperator.dev"]
  resources: ["nsqconsumers"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["nsqoperator.dev"]
  resources: ["nsqconsumers/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["pods", "events"]
  verbs: ["list"]
{{- end }}
