{{/* Names */}}
{{- define "gregor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The StatefulSet's name. Kubernetes adds "-<ordinal>" and a revision-hash label, so it
must stay within 52 characters. */}}
{{- define "gregor.fullname" -}}
{{- $name := "" -}}
{{- if .Values.fullnameOverride -}}
{{- $name = .Values.fullnameOverride -}}
{{- else -}}
{{- $base := default .Chart.Name .Values.nameOverride -}}
{{- if contains $base .Release.Name -}}
{{- $name = .Release.Name -}}
{{- else -}}
{{- $name = printf "%s-%s" .Release.Name $base -}}
{{- end -}}
{{- end -}}
{{- $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "gregor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gregor.headlessName" -}}
{{- printf "%s-headless" (include "gregor.fullname" .) -}}
{{- end -}}

{{- define "gregor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gregor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gregor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gregor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gregor.labels" -}}
helm.sh/chart: {{ include "gregor.chart" . }}
{{ include "gregor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "gregor.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) -}}
{{- end -}}
{{- end -}}

{{/* pod.<headless>.<namespace>.svc.<clusterDomain> without the pod name: each pod's DNS name
is "<fullname>-<ordinal>.<this>". */}}
{{- define "gregor.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "gregor.headlessName" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* How many pods form the initial metadata quorum: quorum.initialVoters, else what the
release's ConfigMap recorded at install, else replicaCount. */}}
{{- define "gregor.initialVoters" -}}
{{- $n := int .Values.quorum.initialVoters -}}
{{- if le $n 0 -}}
{{- $cm := lookup "v1" "ConfigMap" .Release.Namespace (include "gregor.fullname" .) -}}
{{- if and $cm $cm.data (hasKey $cm.data "initial-voters") -}}
{{- $n = int (index $cm.data "initial-voters") -}}
{{- else -}}
{{- $n = int .Values.replicaCount -}}
{{- end -}}
{{- end -}}
{{- if lt $n 1 -}}
{{- fail "quorum.initialVoters (or replicaCount at install) must be at least 1" -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/* Node id of an ordinal: ctx = dict "root" $ "ordinal" N */}}
{{- define "gregor.nodeId" -}}
{{- $root := .root -}}
{{- $key := toString .ordinal -}}
{{- if hasKey $root.Values.quorum.nodeIds $key -}}
{{- int (index $root.Values.quorum.nodeIds $key) -}}
{{- else -}}
{{- add .ordinal (int $root.Values.quorum.nodeIdOffset) -}}
{{- end -}}
{{- end -}}

{{/* The initial voters: ID@POD_DNS:CONTROLLER_PORT,... for ordinals 0..initialVoters-1. */}}
{{- define "gregor.voters" -}}
{{- $root := . -}}
{{- $domain := include "gregor.podDomain" . -}}
{{- $full := include "gregor.fullname" . -}}
{{- $voters := list -}}
{{- range $i := until (int (include "gregor.initialVoters" .)) -}}
{{- $id := add $i (int $root.Values.quorum.nodeIdOffset) -}}
{{- $voters = append $voters (printf "%d@%s-%d.%s:%d" (int $id) $full $i $domain (int $root.Values.ports.controller)) -}}
{{- end -}}
{{- join "," $voters -}}
{{- end -}}

{{/* Ordinals below replicaCount that join as learners: beyond the initial voters, or with a
quorum.nodeIds override. */}}
{{- define "gregor.joiningOrdinals" -}}
{{- $root := . -}}
{{- $initial := int (include "gregor.initialVoters" .) -}}
{{- $out := list -}}
{{- range $i := until (int .Values.replicaCount) -}}
{{- if or (ge $i $initial) (hasKey $root.Values.quorum.nodeIds (toString $i)) -}}
{{- $out = append $out $i -}}
{{- end -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* A Kafka setting's value as the string gregor.toml takes: whole numbers without an
exponent (Helm reads YAML numbers as floats). */}}
{{- define "gregor.kafkaValue" -}}
{{- $v := . -}}
{{- if kindIs "float64" $v -}}
{{- if eq $v (floor $v) -}}{{- printf "%d" (int64 $v) -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else -}}
{{- $v -}}
{{- end -}}
{{- end -}}

{{/* Kafka settings: values over the defaults that follow replicaCount. */}}
{{- define "gregor.kafkaSettings" -}}
{{- $replicas := int .Values.replicaCount -}}
{{- $rf := 3 -}}
{{- if lt $replicas 3 -}}{{- $rf = $replicas -}}{{- end -}}
{{- $minIsr := 1 -}}
{{- if ge $replicas 3 -}}{{- $minIsr = 2 -}}{{- end -}}
{{- $defaults := dict "default.replication.factor" $rf "offsets.topic.replication.factor" $rf "min.insync.replicas" $minIsr -}}
{{- $defaults = merge $defaults (include "gregor.sec.kafkaSettings" . | fromYaml) -}}
{{- $settings := merge (deepCopy (default dict .Values.config.kafka)) $defaults -}}
{{- toYaml $settings -}}
{{- end -}}

{{- define "gregor.podAntiAffinity" -}}
{{- if eq .Values.podAntiAffinityPreset "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "gregor.selectorLabels" . | nindent 12 }}
            app.kubernetes.io/component: broker
{{- else if eq .Values.podAntiAffinityPreset "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "gregor.selectorLabels" . | nindent 10 }}
          app.kubernetes.io/component: broker
{{- else if .Values.podAntiAffinityPreset }}
{{- fail "podAntiAffinityPreset must be soft, hard or empty" }}
{{- end }}
{{- end -}}

{{/* What pod $ordinal advertises when externalAccess is on. ctx = dict "root" $ "ordinal" N */}}
{{- define "gregor.externalAdvertise" -}}
{{- $ea := .root.Values.externalAccess -}}
{{- if eq $ea.type "NodePort" -}}
{{- printf "%s:%d" $ea.nodePort.host (add (int $ea.nodePort.basePort) .ordinal) -}}
{{- else -}}
{{- printf "%s:%d" (index $ea.loadBalancer.hostnames .ordinal) (int $ea.loadBalancer.port) -}}
{{- end -}}
{{- end -}}

{{- define "gregor.validate" -}}
{{- include "gregor.sec.validate" . -}}
{{- if lt (int .Values.replicaCount) 1 -}}
{{- fail "replicaCount must be at least 1" -}}
{{- end -}}
{{- if lt (int .Values.quorum.nodeIdOffset) 0 -}}
{{- fail "quorum.nodeIdOffset must not be negative" -}}
{{- end -}}
{{- range $k, $v := .Values.quorum.nodeIds -}}
{{- if not (regexMatch "^[0-9]+$" (toString $k)) -}}
{{- fail (printf "quorum.nodeIds: key %v is not a pod ordinal" $k) -}}
{{- end -}}
{{- end -}}
{{- if .Values.externalAccess.enabled -}}
{{- if eq .Values.externalAccess.type "NodePort" -}}
{{- if not .Values.externalAccess.nodePort.host -}}
{{- fail "externalAccess.nodePort.host is required with externalAccess.type NodePort" -}}
{{- end -}}
{{- else if eq .Values.externalAccess.type "LoadBalancer" -}}
{{- if lt (len .Values.externalAccess.loadBalancer.hostnames) (int .Values.replicaCount) -}}
{{- fail "externalAccess.loadBalancer.hostnames needs one entry per replica" -}}
{{- end -}}
{{- else -}}
{{- fail "externalAccess.type must be NodePort or LoadBalancer" -}}
{{- end -}}
{{- end -}}
{{- end -}}
