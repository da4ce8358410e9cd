{{/* Kafka security (values: security.*). The broker takes Kafka's own keys; these helpers
derive them. Listener names: CLIENT (ports.kafka), INTERNAL (ports.internal, when
security.interBroker.listener is internal) and CONTROLLER (the Raft plane). */}}

{{- define "gregor.sec.clientProtocol" -}}
{{- upper .Values.security.protocol -}}
{{- end -}}

{{- define "gregor.sec.internal" -}}
{{- if and .Values.security.enabled (eq .Values.security.interBroker.listener "internal") -}}true{{- end -}}
{{- end -}}

{{- define "gregor.sec.internalProtocol" -}}
{{- upper (default .Values.security.protocol .Values.security.interBroker.protocol) -}}
{{- end -}}

{{- define "gregor.sec.controllerProtocol" -}}
{{- upper (default .Values.security.protocol .Values.security.controller.protocol) -}}
{{- end -}}

{{/* The protocol of the listener followers fetch over. */}}
{{- define "gregor.sec.interBrokerProtocol" -}}
{{- if include "gregor.sec.internal" . -}}
{{- include "gregor.sec.internalProtocol" . -}}
{{- else -}}
{{- include "gregor.sec.clientProtocol" . -}}
{{- end -}}
{{- end -}}

{{/* The protocols in use, as a list: [CLIENT's, INTERNAL's (if any), CONTROLLER's]. */}}
{{- define "gregor.sec.protocols" -}}
{{- $p := list (include "gregor.sec.clientProtocol" .) (include "gregor.sec.controllerProtocol" .) -}}
{{- if include "gregor.sec.internal" . -}}
{{- $p = append $p (include "gregor.sec.internalProtocol" .) -}}
{{- end -}}
{{- toJson $p -}}
{{- end -}}

{{- define "gregor.sec.tls" -}}
{{- if .Values.security.enabled -}}
{{- range (include "gregor.sec.protocols" . | fromJsonArray) -}}
{{- if has . (list "SSL" "SASL_SSL") -}}true{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gregor.sec.sasl" -}}
{{- if .Values.security.enabled -}}
{{- range (include "gregor.sec.protocols" . | fromJsonArray) -}}
{{- if has . (list "SASL_PLAINTEXT" "SASL_SSL") -}}true{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the broker certificate. */}}
{{- define "gregor.sec.tlsSecret" -}}
{{- if .Values.security.tls.existingSecret -}}
{{- .Values.security.tls.existingSecret -}}
{{- else if .Values.security.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "gregor.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Where the pods see the files. */}}
{{- define "gregor.sec.tlsDir" -}}/etc/gregor-tls{{- end -}}
{{- define "gregor.sec.caDir" -}}/etc/gregor-ca{{- end -}}
{{- define "gregor.sec.keystoreDir" -}}/etc/gregor-keystore{{- end -}}

{{- define "gregor.sec.keystorePath" -}}
{{- if .Values.security.tls.keystoreKey -}}
{{- printf "%s/%s" (include "gregor.sec.tlsDir" .) .Values.security.tls.keystoreKey -}}
{{- else -}}
{{- printf "%s/keystore.pem" (include "gregor.sec.keystoreDir" .) -}}
{{- end -}}
{{- end -}}

{{- define "gregor.sec.truststorePath" -}}
{{- if .Values.security.tls.caSecret -}}
{{- printf "%s/%s" (include "gregor.sec.caDir" .) .Values.security.tls.caKey -}}
{{- else -}}
{{- printf "%s/%s" (include "gregor.sec.tlsDir" .) .Values.security.tls.caKey -}}
{{- end -}}
{{- end -}}

{{- define "gregor.sec.commonName" -}}
{{- default (include "gregor.fullname" .) .Values.security.tls.certManager.commonName -}}
{{- end -}}

{{/* The PLAIN users: security.sasl.users with interBrokerUser first, without duplicates. */}}
{{- define "gregor.sec.users" -}}
{{- $users := list .Values.security.sasl.interBrokerUser -}}
{{- range .Values.security.sasl.users -}}
{{- if not (has (toString .) $users) -}}
{{- $users = append $users (toString .) -}}
{{- end -}}
{{- end -}}
{{- toJson $users -}}
{{- end -}}

{{/* Listener names (lower case, as in listener.name.<name>.*) whose protocol uses SASL. */}}
{{- define "gregor.sec.saslListeners" -}}
{{- $out := list -}}
{{- if has (include "gregor.sec.clientProtocol" .) (list "SASL_PLAINTEXT" "SASL_SSL") -}}
{{- $out = append $out "client" -}}
{{- end -}}
{{- if and (include "gregor.sec.internal" .) (has (include "gregor.sec.internalProtocol" .) (list "SASL_PLAINTEXT" "SASL_SSL")) -}}
{{- $out = append $out "internal" -}}
{{- end -}}
{{- if has (include "gregor.sec.controllerProtocol" .) (list "SASL_PLAINTEXT" "SASL_SSL") -}}
{{- $out = append $out "controller" -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The brokers' own principal, for super.users. */}}
{{- define "gregor.sec.brokerPrincipal" -}}
{{- $inter := include "gregor.sec.interBrokerProtocol" . -}}
{{- if has $inter (list "SASL_PLAINTEXT" "SASL_SSL") -}}
{{- printf "User:%s" .Values.security.sasl.interBrokerUser -}}
{{- else if and (eq $inter "SSL") .Values.security.tls.certManager.enabled (not .Values.security.tls.existingSecret) -}}
{{- printf "User:CN=%s" (include "gregor.sec.commonName" .) -}}
{{- end -}}
{{- end -}}

{{/* Kafka's security keys for gregor.toml (a YAML map; config.kafka wins over it). */}}
{{- define "gregor.sec.kafkaSettings" -}}
{{- $s := dict -}}
{{- if .Values.security.enabled -}}
{{- $internal := include "gregor.sec.internal" . -}}
{{- $map := list (printf "CLIENT:%s" (include "gregor.sec.clientProtocol" .)) -}}
{{- if $internal -}}
{{- $map = append $map (printf "INTERNAL:%s" (include "gregor.sec.internalProtocol" .)) -}}
{{- end -}}
{{- $map = append $map (printf "CONTROLLER:%s" (include "gregor.sec.controllerProtocol" .)) -}}
{{- $_ := set $s "listener.security.protocol.map" (join "," $map) -}}
{{- $_ := set $s "inter.broker.listener.name" (ternary "INTERNAL" "CLIENT" (eq $internal "true")) -}}
{{- if include "gregor.sec.tls" . -}}
{{- $_ := set $s "ssl.keystore.type" "PEM" -}}
{{- $_ := set $s "ssl.keystore.location" (include "gregor.sec.keystorePath" .) -}}
{{- $_ := set $s "ssl.truststore.type" "PEM" -}}
{{- $_ := set $s "ssl.truststore.location" (include "gregor.sec.truststorePath" .) -}}
{{- if has (include "gregor.sec.clientProtocol" .) (list "SSL" "SASL_SSL") -}}
{{- $_ := set $s "listener.name.client.ssl.client.auth" .Values.security.tls.clientAuth -}}
{{- end -}}
{{- if and $internal (eq (include "gregor.sec.internalProtocol" .) "SSL") -}}
{{- $_ := set $s "listener.name.internal.ssl.client.auth" "required" -}}
{{- end -}}
{{- if eq (include "gregor.sec.controllerProtocol" .) "SSL" -}}
{{- $_ := set $s "listener.name.controller.ssl.client.auth" "required" -}}
{{- end -}}
{{- end -}}
{{- if include "gregor.sec.sasl" . -}}
{{- $_ := set $s "sasl.enabled.mechanisms" (join "," .Values.security.sasl.mechanisms) -}}
{{- $_ := set $s "sasl.mechanism.inter.broker.protocol" "PLAIN" -}}
{{- end -}}
{{- if .Values.security.authorizer.enabled -}}
{{- $_ := set $s "authorizer.class.name" "org.apache.kafka.metadata.authorizer.StandardAuthorizer" -}}
{{- $supers := list -}}
{{- with include "gregor.sec.brokerPrincipal" . -}}
{{- $supers = append $supers . -}}
{{- end -}}
{{- range .Values.security.authorizer.superUsers -}}
{{- if not (has . $supers) -}}
{{- $supers = append $supers . -}}
{{- end -}}
{{- end -}}
{{- $_ := set $s "super.users" (join ";" $supers) -}}
{{- $_ := set $s "allow.everyone.if.no.acl.found" .Values.security.authorizer.allowEveryoneIfNoAclFound -}}
{{- end -}}
{{- end -}}
{{- toYaml $s -}}
{{- end -}}

{{/* GREGOR_KAFKA_LISTENERS: every listener on 0.0.0.0. */}}
{{- define "gregor.sec.listeners" -}}
{{- $l := list (printf "CLIENT://0.0.0.0:%d" (int .Values.ports.kafka)) -}}
{{- if include "gregor.sec.internal" . -}}
{{- $l = append $l (printf "INTERNAL://0.0.0.0:%d" (int .Values.ports.internal)) -}}
{{- end -}}
{{- join "," $l -}}
{{- end -}}

{{/* The DNS names of the cert-manager Certificate. */}}
{{- define "gregor.sec.dnsNames" -}}
{{- $full := include "gregor.fullname" . -}}
{{- $headless := include "gregor.headlessName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $domain := .Values.clusterDomain -}}
{{- $names := list -}}
{{- range $i := until (int .Values.replicaCount) -}}
{{- $names = append $names (printf "%s-%d.%s.%s.svc.%s" $full $i $headless $ns $domain) -}}
{{- end -}}
{{- if .Values.security.tls.certManager.podWildcard -}}
{{- $names = append $names (printf "*.%s.%s.svc.%s" $headless $ns $domain) -}}
{{- end -}}
{{- range $svc := list $full $headless -}}
{{- $names = append $names $svc -}}
{{- $names = append $names (printf "%s.%s" $svc $ns) -}}
{{- $names = append $names (printf "%s.%s.svc" $svc $ns) -}}
{{- $names = append $names (printf "%s.%s.svc.%s" $svc $ns $domain) -}}
{{- end -}}
{{- $ea := .Values.externalAccess -}}
{{- if $ea.enabled -}}
{{- if eq $ea.type "NodePort" -}}
{{- if not (regexMatch "^[0-9.]+$|:" $ea.nodePort.host) -}}
{{- $names = append $names $ea.nodePort.host -}}
{{- end -}}
{{- else -}}
{{- range $ea.loadBalancer.hostnames -}}
{{- if not (regexMatch "^[0-9.]+$|:" .) -}}
{{- $names = append $names . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range .Values.security.tls.certManager.extraDnsNames -}}
{{- $names = append $names . -}}
{{- end -}}
{{- toJson (uniq $names) -}}
{{- end -}}

{{/* IP SANs: security.tls.certManager.ipAddresses and externalAccess addresses given as IPs. */}}
{{- define "gregor.sec.ipAddresses" -}}
{{- $ips := list -}}
{{- $ea := .Values.externalAccess -}}
{{- if $ea.enabled -}}
{{- $hosts := ternary (list $ea.nodePort.host) $ea.loadBalancer.hostnames (eq $ea.type "NodePort") -}}
{{- range $hosts -}}
{{- if regexMatch "^[0-9.]+$|:" . -}}
{{- $ips = append $ips . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range .Values.security.tls.certManager.ipAddresses -}}
{{- $ips = append $ips . -}}
{{- end -}}
{{- toJson (uniq $ips) -}}
{{- end -}}

{{- define "gregor.sec.validate" -}}
{{- $sec := .Values.security -}}
{{- if $sec.enabled -}}
{{- $protocols := list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL" -}}
{{- range $what, $p := dict "security.protocol" (include "gregor.sec.clientProtocol" .) "security.interBroker.protocol" (include "gregor.sec.internalProtocol" .) "security.controller.protocol" (include "gregor.sec.controllerProtocol" .) -}}
{{- if not (has $p $protocols) -}}
{{- fail (printf "%s must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, not %s" $what $p) -}}
{{- end -}}
{{- end -}}
{{- if not (has $sec.interBroker.listener (list "client" "internal")) -}}
{{- fail "security.interBroker.listener must be client or internal" -}}
{{- end -}}
{{- if and (include "gregor.sec.internal" .) (has (int .Values.ports.internal) (list (int .Values.ports.kafka) (int .Values.ports.controller) (int .Values.ports.admin))) -}}
{{- fail "ports.internal must differ from the other ports" -}}
{{- end -}}
{{- if not (has $sec.tls.clientAuth (list "none" "requested" "required")) -}}
{{- fail "security.tls.clientAuth must be none, requested or required" -}}
{{- end -}}
{{- if include "gregor.sec.tls" . -}}
{{- if not (include "gregor.sec.tlsSecret" .) -}}
{{- fail "TLS needs a certificate: set security.tls.existingSecret or security.tls.certManager.enabled" -}}
{{- end -}}
{{- if and $sec.tls.certManager.enabled (not $sec.tls.certManager.issuerRef.name) -}}
{{- fail "security.tls.certManager.issuerRef.name is required" -}}
{{- end -}}
{{- if not $sec.tls.caKey -}}
{{- fail "security.tls.caKey is required: brokers verify each other against it" -}}
{{- end -}}
{{- end -}}
{{- if include "gregor.sec.sasl" . -}}
{{- if not $sec.sasl.existingSecret -}}
{{- fail "SASL needs security.sasl.existingSecret (the PLAIN users' passwords)" -}}
{{- end -}}
{{- range $sec.sasl.mechanisms -}}
{{- if not (has . (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) -}}
{{- fail (printf "security.sasl.mechanisms: %s is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)" .) -}}
{{- end -}}
{{- end -}}
{{- if not $sec.sasl.jaasKey -}}
{{- range (include "gregor.sec.users" . | fromJsonArray) -}}
{{- if not (regexMatch "^[-._a-zA-Z0-9]+$" .) -}}
{{- fail (printf "security.sasl.users: %q is not a valid user name (letters, digits, . _ -)" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $sec.authorizer.enabled -}}
{{- $inter := include "gregor.sec.interBrokerProtocol" . -}}
{{- if eq $inter "PLAINTEXT" -}}
{{- fail "security.authorizer needs an authenticated inter-broker listener (SSL or SASL): brokers would be User:ANONYMOUS" -}}
{{- end -}}
{{- if and (eq $inter "SSL") (not (include "gregor.sec.internal" .)) (ne $sec.tls.clientAuth "required") -}}
{{- fail "security.authorizer with SSL between brokers over the CLIENT listener needs security.tls.clientAuth: required (the brokers' principal is their certificate's subject)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
