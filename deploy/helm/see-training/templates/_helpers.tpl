{{- define "see-training.fullname" -}}
{{- printf "%s-%s" .Release.Name (required "runName is required: the run directory's name" .Values.runName) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "see-training.labels" -}}
app.kubernetes.io/name: see-training
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
see-sidecar/run: {{ .Values.runName | quote }}
{{- end -}}

{{- define "see-training.runsClaim" -}}
{{- .Values.runs.existingClaim | default (printf "%s-runs" .Release.Name) -}}
{{- end -}}
