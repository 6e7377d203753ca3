{{/* Name of the release's objects: <release>-opsmantik, or the release name if it says opsmantik. */}}
{{- define "opsmantik.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "opsmantik.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway") */}}
{{- define "opsmantik.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "opsmantik.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The settings every process reads (services/config.py: OPSMANTIK_ + the field name). */}}
{{- define "opsmantik.env" -}}
- name: OPSMANTIK_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required" .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- range splitList "," (required "kafka.bootstrap is required" .Values.kafka.bootstrap) }}
{{- if not (regexMatch "^[^:,[:space:]]+:[0-9]+$" (trim .)) }}
{{- fail (printf "kafka.bootstrap: %q is not host:port" .) }}
{{- end }}
{{- end }}
- name: OPSMANTIK_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: OPSMANTIK_TOPIC
  value: {{ .Values.kafka.topic | quote }}
- name: OPSMANTIK_BILLABLE_TOPIC
  value: {{ .Values.kafka.billableTopic | quote }}
- name: OPSMANTIK_TOPIC_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: OPSMANTIK_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
- name: OPSMANTIK_MIN_INSYNC_REPLICAS
  value: {{ .Values.kafka.minInsyncReplicas | quote }}
- name: OPSMANTIK_GATEWAY_PORT
  value: {{ .Values.gateway.port | quote }}
- name: OPSMANTIK_WORKER_METRICS_PORT
  value: {{ .Values.worker.metricsPort | quote }}
- name: OPSMANTIK_RELAY_METRICS_PORT
  value: {{ .Values.relay.metricsPort | quote }}
- name: OPSMANTIK_AUDIT_METRICS_PORT
  value: {{ .Values.audit.metricsPort | quote }}
# Worker, relay and audit serve /metrics on this host: all interfaces, so Prometheus can scrape.
- name: OPSMANTIK_METRICS_HOST
  value: "0.0.0.0"
{{- $managed := list "OPSMANTIK_DATABASE_URL" "OPSMANTIK_KAFKA_BOOTSTRAP" "OPSMANTIK_TOPIC" "OPSMANTIK_BILLABLE_TOPIC" "OPSMANTIK_TOPIC_PARTITIONS" "OPSMANTIK_REPLICATION_FACTOR" "OPSMANTIK_MIN_INSYNC_REPLICAS" "OPSMANTIK_GATEWAY_PORT" "OPSMANTIK_WORKER_METRICS_PORT" "OPSMANTIK_RELAY_METRICS_PORT" "OPSMANTIK_AUDIT_METRICS_PORT" "OPSMANTIK_METRICS_HOST" "OPSMANTIK_WORKER_DATA_DIR" }}
{{- range $name, $value := .Values.extraEnv }}
{{- if has $name $managed }}
{{- fail (printf "extraEnv.%s: set by the chart from its own values (docs/operations.md)" $name) }}
{{- end }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level fields shared by every workload. */}}
{{- define "opsmantik.podCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "opsmantik.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}
