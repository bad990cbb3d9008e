{{/* Names and labels shared by every template. */}}
{{- define "see-sidecar.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "see-sidecar.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "see-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "see-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "see-sidecar.labels" -}}
{{ include "see-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "see-sidecar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "see-sidecar.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "see-sidecar.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion .Values.image.flavor) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* The Secret holding chart-created keys (API keys, judge key). */}}
{{- define "see-sidecar.secretName" -}}
{{- printf "%s-keys" (include "see-sidecar.fullname" .) -}}
{{- end -}}

{{- define "see-sidecar.apiKeysSecret" -}}
{{- .Values.apiKeys.existingSecret | default (include "see-sidecar.secretName" .) -}}
{{- end -}}

{{- define "see-sidecar.judgeKeySecret" -}}
{{- .Values.judgeKey.existingSecret | default (include "see-sidecar.secretName" .) -}}
{{- end -}}

{{- define "see-sidecar.hasApiKeys" -}}
{{- if or .Values.apiKeys.keys .Values.apiKeys.existingSecret .Values.apiKeys.generate -}}true{{- end -}}
{{- end -}}

{{/* The chart creates the API-key Secret entry: keys listed in values, or one generated key. */}}
{{- define "see-sidecar.createsApiKeys" -}}
{{- if and (not .Values.apiKeys.existingSecret) (or .Values.apiKeys.keys .Values.apiKeys.generate) -}}true{{- end -}}
{{- end -}}

{{/* A generated key: the one already in the release's Secret (upgrades keep it), else a new random one. */}}
{{- define "see-sidecar.generatedApiKey" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "see-sidecar.secretName" .) -}}
{{- if and $existing (index ($existing.data | default dict) .Values.apiKeys.key) -}}
{{- index $existing.data .Values.apiKeys.key | b64dec | trim -}}
{{- else -}}
{{- randAlphaNum 40 -}}
{{- end -}}
{{- end -}}

{{- define "see-sidecar.hasJudgeKey" -}}
{{- if or .Values.judgeKey.value .Values.judgeKey.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* One SEE_* value as a ConfigMap string: lists and maps as JSON, everything else as text. */}}
{{- define "see-sidecar.envValue" -}}
{{- if or (kindIs "slice" .) (kindIs "map" .) -}}
{{- toJson . -}}
{{- else if kindIs "float64" . -}}
{{- /* whole numbers come out of YAML as float64; print 8000, not 8e+03 */ -}}
{{- if eq (floor .) . }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/* Refuse configurations that cannot work, with what to change. */}}
{{- define "see-sidecar.validate" -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (add (int .Values.preStopSleepSeconds) 30) -}}
{{- fail "terminationGracePeriodSeconds must exceed preStopSleepSeconds + 30 (the server's own graceful shutdown)" -}}
{{- end -}}
{{- $scaled := or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled -}}
{{- if and $scaled (not .Values.ledger.existingSecret) .Values.config.ledger.url (not (hasPrefix "postgres" (toString .Values.config.ledger.url))) -}}
{{- fail "several replicas cannot share one SQLite ledger: set ledger.existingSecret (a PostgreSQL DSN), or config.ledger.enabled=false" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.modelCache.existingClaim) .Values.modelCache.create (has "ReadWriteOnce" .Values.modelCache.accessModes) -}}
{{- fail "several replicas cannot mount one ReadWriteOnce volume: use modelCache.accessModes [ReadOnlyMany] or [ReadWriteMany], or an existingClaim" -}}
{{- end -}}
{{- if and .Values.config.answer_model .Values.config.answer_engine_url -}}
{{- fail "set config.answer_model (a second engine in the pod) or config.answer_engine_url (a remote one), not both" -}}
{{- end -}}
{{- if and .Values.config.shadow.rate (gt (float64 .Values.config.shadow.rate) 0.0) (not (include "see-sidecar.hasJudgeKey" .)) -}}
{{- fail "shadow judging (config.shadow.rate > 0) needs judgeKey.value or judgeKey.existingSecret" -}}
{{- end -}}
{{- end -}}
