{{/* gregor.toml: Kafka settings and provisioned topics. Per-pod settings (node id, voters,
listeners, advertised address, data dir) come from the environment, which takes precedence
over the file. */}}
{{- define "gregor.toml" -}}
# Rendered by the gregor Helm chart ({{ include "gregor.chart" . }}). Node id, voters,
# listeners, advertised address and data dir are set per pod through GREGOR_* variables.

[kafka]
{{- range $k, $v := (include "gregor.kafkaSettings" . | fromYaml) }}
{{ toJson (toString $k) }} = {{ include "gregor.kafkaValue" $v | toJson }}
{{- end }}
{{- range $t := .Values.provisioning.topics }}
{{- if not $t.name }}
{{- fail "provisioning.topics: every topic needs a name" }}
{{- end }}

[[provisioning.topics]]
name = {{ toJson (toString $t.name) }}
{{- if hasKey $t "partitions" }}
partitions = {{ int64 $t.partitions }}
{{- end }}
{{- if hasKey $t "replicationFactor" }}
replication_factor = {{ int64 $t.replicationFactor }}
{{- end }}
{{- with $t.config }}
[provisioning.topics.config]
{{- range $k, $v := . }}
{{ toJson (toString $k) }} = {{ include "gregor.kafkaValue" $v | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
