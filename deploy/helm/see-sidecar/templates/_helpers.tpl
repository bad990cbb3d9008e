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

{{/* Plugin shape: vLLM's own server with the see_sidecar endpoint plugin (values `shape`). */}}
{{- define "see-sidecar.plugin" -}}
{{- if eq .Values.shape "plugin" -}}true{{- end -}}
{{- end -}}

{{/* The default model's name (selfeval.models.DEFAULT_MODEL_NAME; a test keeps them equal). */}}
{{- define "see-sidecar.defaultModelName" -}}SmolLM2-135M-Instruct-hs2-distill{{- end -}}

{{/* The checkpoint directory vLLM serves in plugin shape: config.model, else where `see model prepare` builds
the default under the cache directory. */}}
{{- define "see-sidecar.pluginModelDir" -}}
{{- if .Values.config.model -}}
{{- .Values.config.model -}}
{{- else -}}
{{- printf "%s/models/%s" (.Values.config.cache_dir | default "/var/lib/see-sidecar/cache") (include "see-sidecar.defaultModelName" .) -}}
{{- end -}}
{{- end -}}

{{/* vLLM's server in plugin shape: the checkpoint, its served name, address, then plugin.vllmArgs. */}}
{{- define "see-sidecar.pluginArgs" -}}
{{- $model := include "see-sidecar.pluginModelDir" . -}}
{{- $args := list "--model" $model "--served-model-name" (.Values.config.served_model_name | default (base $model)) "--host" (.Values.config.host | default "0.0.0.0") "--port" (toString (int .Values.config.port)) -}}
{{- toJson (concat $args .Values.plugin.vllmArgs) -}}
{{- end -}}

{{/* Settings of this project's server that vLLM's server (plugin shape) does not read, and what to do instead. */}}
{{- define "see-sidecar.pluginRefusedSettings" -}}
{{- $flag := "pass %s in plugin.vllmArgs" -}}
{{- $env := "set %s in extraEnv" -}}
{{- toJson (dict
  "engine_url" "remove it: the plugin runs inside the engine's own server"
  "answer_model" "use shape sidecar: split mode needs two engines"
  "answer_engine_url" "use shape sidecar: split mode needs two engines"
  "device" "choose the image flavor"
  "max_model_len" (printf $flag "--max-model-len")
  "dtype" (printf $flag "--dtype")
  "enforce_eager" (printf $flag "--enforce-eager")
  "enable_prefix_caching" (printf $flag "--enable-prefix-caching")
  "kv_block_size" (printf $flag "--block-size")
  "cpu_kv_cache_gib" (printf $env "VLLM_CPU_KVCACHE_SPACE")
  "cpu_threads_bind" (printf $env "VLLM_CPU_OMP_THREADS_BIND")
  "tensor_parallel_size" (printf $flag "--tensor-parallel-size")
  "gpu_memory_utilization" (printf $flag "--gpu-memory-utilization")
  "max_pending_requests" (printf $flag "--max-num-seqs (vLLM queues the rest)")
  "max_pending_tokens" (printf $flag "--max-num-batched-tokens (vLLM queues the rest)")
  "max_body_bytes" "use shape sidecar: vLLM's server has no body limit"
  "body_timeout_s" "use shape sidecar: vLLM's server has no body timeout"
  "request_timeout_s" "use shape sidecar: vLLM's server has no request timeout"
) -}}
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
{{- if include "see-sidecar.plugin" . -}}
{{- range $name, $instead := (include "see-sidecar.pluginRefusedSettings" . | fromJson) -}}
{{- if not (kindIs "invalid" (index $.Values.config $name)) -}}
{{- fail (printf "shape plugin: vLLM's server does not read config.%s; %s" $name $instead) -}}
{{- end -}}
{{- end -}}
{{- if gt (len .Values.apiKeys.keys) 1 -}}
{{- fail "shape plugin: vLLM's server takes one API key (VLLM_API_KEY); list one in apiKeys.keys" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (eq .Values.autoscaling.metricName "see_engine_requests_waiting") -}}
{{- fail "shape plugin: the queue depth is vLLM's vllm:num_requests_waiting (the sidecar's see_engine_requests is not exported there); set autoscaling.metricName to your metrics adapter's name for it" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.config.shadow.rate (gt (float64 .Values.config.shadow.rate) 0.0) (not (include "see-sidecar.hasJudgeKey" .)) -}}
{{- fail "shadow judging (config.shadow.rate > 0) needs judgeKey.value or judgeKey.existingSecret" -}}
{{- end -}}
{{- end -}}
