{{/* The chart's name, and the release's full name (at most 63 characters, for DNS). */}}
{{- define "canopy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "canopy.fullname" -}}
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

{{- define "canopy.driverName" -}}{{ include "canopy.fullname" . | trunc 56 | trimSuffix "-" }}-driver{{- end }}
{{- define "canopy.executorName" -}}{{ include "canopy.fullname" . | trunc 54 | trimSuffix "-" }}-executor{{- end }}

{{- define "canopy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "canopy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: canopy
{{- end }}

{{- define "canopy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canopy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: driver or executor. */}}
{{- define "canopy.componentSelector" -}}
{{ include "canopy.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "canopy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "canopy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "canopy.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "canopy.tokenSecretName" -}}
{{- .Values.auth.token.existingSecret | default (printf "%s-auth" (include "canopy.fullname" .)) }}
{{- end }}

{{- define "canopy.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "canopy.fullname" .)) }}
{{- end }}

{{- define "canopy.tlsServerName" -}}
{{- .Values.tls.serverName | default (include "canopy.fullname" .) }}
{{- end }}

{{/* The most executors the job uses at once: the Deployment's replicas without an autoscaler. */}}
{{- define "canopy.executorReplicas" -}}
{{- if not (kindIs "invalid" .Values.executor.replicas) }}
{{- .Values.executor.replicas }}
{{- else if eq .Values.job.command "scale" }}
{{- $max := 1 }}
{{- range .Values.job.executors }}{{- if gt (int .) $max }}{{- $max = int . }}{{- end }}{{- end }}
{{- $max }}
{{- else }}
{{- .Values.job.maxExecutors }}
{{- end }}
{{- end }}

{{/* Environment shared by the driver and the executors: authentication (files, never values). */}}
{{- define "canopy.authEnv" -}}
{{- if .Values.auth.token.enabled }}
- name: CANOPY_AUTH_TOKEN_FILE
  value: /var/run/canopy/auth/{{ .Values.auth.token.key }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: CANOPY_TLS_CERT
  value: /var/run/canopy/tls/tls.crt
- name: CANOPY_TLS_KEY
  value: /var/run/canopy/tls/tls.key
- name: CANOPY_TLS_CA
  value: /var/run/canopy/tls/ca.crt
- name: CANOPY_TLS_SERVER_NAME
  value: {{ include "canopy.tlsServerName" . | quote }}
{{- end }}
{{- end }}

{{- define "canopy.authVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.auth.token.enabled }}
- name: auth
  mountPath: /var/run/canopy/auth
  readOnly: true
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /var/run/canopy/tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "canopy.authVolumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.auth.token.enabled }}
- name: auth
  secret:
    secretName: {{ include "canopy.tokenSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.auth.token.key }}
        path: {{ .Values.auth.token.key }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "canopy.tlsSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Where a pod may run: nodeSelector, tolerations, affinity and topologySpreadConstraints of a
component's values (job or executor). */}}
{{/* The data volume (persistentVolumeClaim or hostPath), read-only; nothing for the embedded
data. The driver mounts it, and so do executors that read their own rows. */}}
{{- define "canopy.dataVolumeMounts" -}}
{{- if ne .Values.data.source "embedded" -}}
- name: data
  mountPath: /data
  readOnly: true
{{- end }}
{{- end }}

{{- define "canopy.dataVolumes" -}}
{{- if eq .Values.data.source "persistentVolumeClaim" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ .Values.data.existingClaim }}
    readOnly: true
{{- else if eq .Values.data.source "hostPath" -}}
- name: data
  hostPath:
    path: {{ .Values.data.hostPath }}
    type: Directory
{{- end }}
{{- end }}

{{- define "canopy.placement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Refuse combinations the schema cannot express. */}}
{{- define "canopy.validate" -}}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling: enable either hpa or keda, not both (both would scale the executor Deployment)" }}
{{- end }}
{{- if and (not .Values.auth.token.enabled) (not .Values.tls.enabled) }}
{{- fail "auth.token.enabled or tls.enabled: executors listen on the pod network and refuse to serve it unauthenticated" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not .Values.tls.certManager.enabled) }}
{{- fail "tls.enabled needs tls.existingSecret or tls.certManager.enabled" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.issuerRef.name: the cert-manager Issuer or ClusterIssuer that signs the certificate" }}
{{- end }}
{{- if and (eq .Values.data.source "persistentVolumeClaim") (not .Values.data.existingClaim) }}
{{- fail "data.existingClaim: the PersistentVolumeClaim that holds data.file" }}
{{- end }}
{{- if and (eq .Values.data.source "hostPath") (not .Values.data.hostPath) }}
{{- fail "data.hostPath: the node directory that holds data.file" }}
{{- end }}
{{- if and (ne .Values.data.source "embedded") (not .Values.data.file) }}
{{- fail "data.file: the dataset's file name inside the data volume" }}
{{- end }}
{{- if gt (int .Values.job.minExecutors) (int .Values.job.maxExecutors) }}
{{- fail "job.minExecutors must be at most job.maxExecutors" }}
{{- end }}
{{- end }}
