{{- define "op.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "op.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: nodepool-operators
{{- end -}}
{{- define "op.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "op.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default .Chart.Name .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}
{{- /* An operator flag from a value: rendered only when the value is set (not null). */}}
{{- define "op.flag" -}}
{{- $value := index . 1 -}}
{{- if not (kindIs "invalid" $value) }}
            - {{ index . 0 }}={{ $value }}
{{- end -}}
{{- end -}}
