{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-wide name prefix of every object. */}}
{{- define "switchboard.fullname" -}}
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

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "edge"). */}}
{{- define "switchboard.componentSelector" -}}
{{ include "switchboard.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "switchboard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Redis and NATS URLs, falling back to the dev instances. Empty when an existing Secret holds them. */}}
{{- define "switchboard.redisURL" -}}
{{- if .Values.redis.url }}{{ .Values.redis.url }}
{{- else if .Values.dev.enabled }}{{ printf "redis://%s-redis:6379/0" (include "switchboard.fullname" .) }}
{{- end }}
{{- end }}

{{- define "switchboard.natsURL" -}}
{{- if .Values.nats.url }}{{ .Values.nats.url }}
{{- else if .Values.dev.enabled }}{{ printf "nats://%s-nats:4222" (include "switchboard.fullname" .) }}
{{- end }}
{{- end }}

{{/* Fails the render early with a message an operator can act on. */}}
{{- define "switchboard.validate" -}}
{{- /* Instead of a kubeVersion constraint (README.md): the APIs the chart
       uses, which helm template's default capabilities have. */}}
{{- range $api := list "autoscaling/v2" "policy/v1" }}
{{- if not ($.Capabilities.APIVersions.Has $api) }}
{{- fail (printf "switchboard: the cluster does not serve %s: the chart needs Kubernetes 1.25 or newer (this one reports %s)" $api $.Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
{{- if and (not (include "switchboard.redisURL" .)) (not .Values.redis.existingSecret) (not .Values.redis.addrs) }}
{{- fail "switchboard: set redis.url (or redis.addrs, or redis.existingSecret), or dev.enabled=true to try the chart without Redis" }}
{{- end }}
{{- if and (not (include "switchboard.natsURL" .)) (not .Values.nats.existingSecret) }}
{{- fail "switchboard: set nats.url (or nats.existingSecret), or dev.enabled=true to try the chart without NATS" }}
{{- end }}
{{- $d := .Values.edge.drain }}
{{- if le (int $d.timeoutSeconds) (add $d.delaySeconds $d.windowSeconds | int) }}
{{- fail (printf "switchboard: edge.drain.timeoutSeconds (%v) must exceed delaySeconds + windowSeconds (%v)" $d.timeoutSeconds (add $d.delaySeconds $d.windowSeconds)) }}
{{- end }}
{{- if le (int .Values.edge.terminationGracePeriodSeconds) (int $d.timeoutSeconds) }}
{{- fail (printf "switchboard: edge.terminationGracePeriodSeconds (%v) must exceed edge.drain.timeoutSeconds (%v)" .Values.edge.terminationGracePeriodSeconds $d.timeoutSeconds) }}
{{- end }}
{{- end }}

{{/* Name of the Secret with the API tokens file. */}}
{{- define "switchboard.tokensSecret" -}}
{{- default (printf "%s-api-tokens" (include "switchboard.fullname" .)) .Values.apiAuth.existingSecret }}
{{- end }}

{{/* Environment shared by edge and router: connection settings from Secrets. */}}
{{- define "switchboard.connEnv" -}}
- name: SWITCHBOARD_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (include "switchboard.fullname" .) .Values.redis.existingSecret }}
      key: {{ ternary .Values.redis.existingSecretKey "redis-url" (ne .Values.redis.existingSecret "") }}
      optional: true
- name: SWITCHBOARD_NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (include "switchboard.fullname" .) .Values.nats.existingSecret }}
      key: {{ ternary .Values.nats.existingSecretKey "nats-url" (ne .Values.nats.existingSecret "") }}
{{- end }}

{{/* Pod anti-affinity spreading one component's pods over nodes. */}}
{{- define "switchboard.antiAffinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "switchboard.componentSelector" (dict "ctx" .ctx "component" .component) | fromYaml)) -}}
podAntiAffinity:
{{- if eq .mode "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - {{- toYaml $term | nindent 6 }}
{{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end }}
{{- end }}

{{- /* Who may reach the @connections API: this namespace plus the allowed ones. */}}
{{- define "switchboard.apiPeers" -}}
- podSelector: {}
{{- range .Values.networkPolicy.apiAllowedNamespaces }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ . | quote }}
{{- end }}
{{- end }}
{{- define "switchboard.metricsRule" -}}
- ports:
    - port: admin
      protocol: TCP
  {{- with .Values.networkPolicy.metricsAllowedNamespaces }}
  from:
    {{- range . }}
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ . | quote }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* Redis settings other than the URL, shared by edge and router ConfigMaps. */}}
{{- define "switchboard.redisConfig" -}}
{{- with .Values.redis.keyPrefix }}
SWITCHBOARD_REDIS_KEY_PREFIX: {{ . | quote }}
{{- end }}
{{- with .Values.redis.addrs }}
SWITCHBOARD_REDIS_ADDRS: {{ join "," . | quote }}
{{- end }}
{{- with .Values.redis.masterName }}
SWITCHBOARD_REDIS_MASTER_NAME: {{ . | quote }}
{{- end }}
{{- end }}
