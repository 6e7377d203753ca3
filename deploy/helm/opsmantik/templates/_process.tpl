{{/*
A background process (worker, relay, audit): Deployment + a headless Service for its /metrics.
(dict "ctx" $ "component" "worker" "args" (list "worker") "port" 9101 "healthPath" "/healthz"
      "replicas" 2 "values" .Values.worker "env" (list ...) "mounts" (list ...) "volumes" (list ...))
*/}}
{{- define "opsmantik.process" -}}
{{- $ := .ctx -}}
{{- $name := printf "%s-%s" (include "opsmantik.fullname" $) .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "opsmantik.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: {{ .replicas }}
  {{- with .strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "opsmantik.selectorLabels" (dict "ctx" $ "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "opsmantik.labels" $ | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      {{- with $.Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- include "opsmantik.podCommon" $ | nindent 6 }}
      {{- with .values.terminationGracePeriodSeconds }}
      terminationGracePeriodSeconds: {{ . }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "opsmantik.image" $ }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          command: {{ prepend .args "opsmantik" | toJson }}
          env:
            {{- include "opsmantik.env" $ | nindent 12 }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: {{ .port }}
              protocol: TCP
          startupProbe:
            httpGet: {path: {{ .healthPath }}, port: metrics}
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet: {path: {{ .healthPath }}, port: metrics}
            periodSeconds: 10
            timeoutSeconds: 2
            failureThreshold: 3
          readinessProbe:
            httpGet: {path: {{ .healthPath }}, port: metrics}
            periodSeconds: 10
            timeoutSeconds: 2
          securityContext:
            {{- toYaml $.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            {{- with .mounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "opsmantik.tmpVolume" $ | nindent 8 }}
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}-metrics
  labels:
    {{- include "opsmantik.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    opsmantik.com/job: opsmantik-{{ .component }}
spec:
  clusterIP: None
  selector:
    {{- include "opsmantik.selectorLabels" (dict "ctx" $ "component" .component) | nindent 4 }}
  ports:
    - name: metrics
      port: {{ .port }}
      targetPort: metrics
      protocol: TCP
{{- if and .values.pdb .values.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "opsmantik.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "opsmantik.selectorLabels" (dict "ctx" $ "component" .component) | nindent 6 }}
{{- end }}
{{- end -}}
