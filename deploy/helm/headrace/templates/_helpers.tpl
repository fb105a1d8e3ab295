{{/*
Names, labels and the pod template every headrace service shares.

Templates that render one object per service call these with a context
`dict "root" $ "name" <service name> "svc" <its values>`.
*/}}

{{- define "headrace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name. Cut to 39 characters so that `<base>-orchestrator`
stays within the 52 a StatefulSet name may have (its pods' revision label
appends 11).
*/}}
{{- define "headrace.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 39 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 39 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 39 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "headrace.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "headrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "headrace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "headrace.labels" -}}
helm.sh/chart: {{ include "headrace.chart" . }}
{{ include "headrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: headrace
{{- end }}

{{/* The name of one service's objects: `<fullname>-<service>`. */}}
{{- define "headrace.componentName" -}}
{{- printf "%s-%s" (include "headrace.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "headrace.componentSelectorLabels" -}}
{{ include "headrace.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "headrace.componentLabels" -}}
{{ include "headrace.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/*
The Service a StatefulSet names as its serviceName (per-pod DNS): the
service's own Service when that is headless, else `<name>-headless`.
*/}}
{{- define "headrace.governingService" -}}
{{- if .svc.service }}
{{- printf "%s-headless" (include "headrace.componentName" .) }}
{{- else }}
{{- include "headrace.componentName" . }}
{{- end }}
{{- end }}

{{/* The port's name: the API serves everything on it, the others metrics and health. */}}
{{- define "headrace.portName" -}}
{{- if eq .name "api" }}http{{ else }}metrics{{ end }}
{{- end }}

{{/* True (non-empty) when the service keeps its data on a PersistentVolumeClaim. */}}
{{- define "headrace.persistent" -}}
{{- if and (eq .svc.workload "StatefulSet") (dig "persistence" "enabled" false .svc) }}true{{ end }}
{{- end }}

{{- define "headrace.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Settings every service and the topics job get (HEADRACE_*, headrace/settings.py),
as a YAML map of strings; `config` entries are added last and win.
*/}}
{{- define "headrace.config" -}}
{{- $v := .Values -}}
{{- $c := dict
  "HEADRACE_BOOTSTRAP" (toString $v.kafka.bootstrap)
  "HEADRACE_TOPIC_PREFIX" (toString $v.settings.topicPrefix)
  "HEADRACE_PARTITIONS" (toString $v.settings.partitions)
  "HEADRACE_REPLICATION_FACTOR" (toString $v.settings.replicationFactor)
  "HEADRACE_LOG_LEVEL" (toString $v.settings.logLevel)
  "HEADRACE_LOG_FORMAT" (toString $v.settings.logFormat)
  "HEADRACE_HOME" "/var/lib/headrace"
  "HEADRACE_DATA_DIR" "/var/lib/headrace/data"
-}}
{{- with $v.settings.minInsyncReplicas }}
{{- $_ := set $c "HEADRACE_MIN_INSYNC_REPLICAS" (toString .) }}
{{- end }}
{{- with $v.settings.tenantSpread }}
{{- $_ := set $c "HEADRACE_TENANT_SPREAD" (toString .) }}
{{- end }}
{{- with $v.settings.schemaRegistryUrl }}
{{- $_ := set $c "HEADRACE_SCHEMA_REGISTRY_URL" (toString .) }}
{{- end }}
{{- if $v.services.api.enabled }}
{{- $api := dict "root" . "name" "api" "svc" $v.services.api }}
{{- $_ := set $c "HEADRACE_API_URL" (printf "http://%s:%v" (include "headrace.componentName" $api) $v.services.api.port) }}
{{- end }}
{{- range $k, $val := $v.config }}
{{- $_ := set $c $k (toString $val) }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/*
`headrace serve <name>` and its options. The instance is the pod's name: stable
for a StatefulSet replica, so it keeps its static group membership (it gets
its partitions back on restart) and its RocksDB folder. `serve api` binds
with --port/--host; `serve http` has no --instance.
*/}}
{{- define "headrace.args" -}}
- serve
- {{ .name }}
{{- if ne .name "http" }}
- --instance
- $(POD_NAME)
{{- end }}
{{- if eq .name "api" }}
- --port
- {{ .svc.port | quote }}
- --host
- 0.0.0.0
{{- else }}
- --web-port
- {{ .svc.port | quote }}
{{- end }}
{{- range .svc.args }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
A probe's action: GET /healthz on the service's port. Every service binds it
to HEADRACE_WEB_HOST, which the image sets to 0.0.0.0 so the kubelet reaches it.
*/}}
{{- define "headrace.probeAction" -}}
httpGet:
  path: /healthz
  port: {{ include "headrace.portName" . }}
{{- end }}

{{- define "headrace.probes" -}}
{{- $p := .root.Values.probes -}}
startupProbe:
  {{- include "headrace.probeAction" . | nindent 2 }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.startupFailureThreshold }}
readinessProbe:
  {{- include "headrace.probeAction" . | nindent 2 }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
livenessProbe:
  {{- include "headrace.probeAction" . | nindent 2 }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
{{- end }}

{{/* Security and placement shared by every pod, the topics job's included. */}}
{{- define "headrace.podCommon" -}}
automountServiceAccountToken: false
# Service links would put e.g. HEADRACE_API_PORT=tcp://... (the `<release>-api`
# Service's link variable) into the environment, where it is a headrace setting.
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The pod template of one service (Deployment or StatefulSet). */}}
{{- define "headrace.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $svc := .svc -}}
metadata:
  labels:
    {{- include "headrace.componentSelectorLabels" . | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A settings change rolls the pods: they read the ConfigMap only at start.
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- include "headrace.podCommon" $root | nindent 2 }}
  terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds }}
  containers:
    - name: {{ .name }}
      image: {{ include "headrace.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        {{- include "headrace.args" . | nindent 8 }}
      ports:
        - name: {{ include "headrace.portName" . }}
          containerPort: {{ $svc.port }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "headrace.fullname" $root }}
        {{- with $v.extraEnvFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- range $k, $val := $svc.env }}
        - name: {{ $k }}
          value: {{ $val | toString | quote }}
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- include "headrace.probes" . | nindent 6 }}
      {{- with $svc.preStopSleepSeconds }}
      lifecycle:
        preStop:
          exec:
            command: ["sleep", {{ . | quote }}]
      {{- end }}
      resources:
        {{- toYaml $svc.resources | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        - name: data
          mountPath: /var/lib/headrace/data
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir: {}
    {{- if not (include "headrace.persistent" .) }}
    - name: data
      emptyDir: {}
    {{- end }}
  {{- with (default $v.nodeSelector $svc.nodeSelector) }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (default $v.tolerations $svc.tolerations) }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (default $v.affinity $svc.affinity) }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
