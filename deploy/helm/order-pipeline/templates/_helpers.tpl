{{/* The release's name prefix of every object. */}}
{{- define "op.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; call with (dict "ctx" $ "component" "ingress"). */}}
{{- define "op.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: orderpipeline
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "op.selector" . }}
{{- end -}}

{{/* The labels that select a component's pods. */}}
{{- define "op.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end -}}

{{/* An image of deploy/images: (dict "ctx" $ "name" "ingress"). */}}
{{- define "op.image" -}}
{{ printf "%s/%s:%s" .ctx.Values.image.repository .name (default .ctx.Chart.AppVersion .ctx.Values.image.tag) }}
{{- end -}}

{{/* The pod's security context: non-root, no privilege, the runtime's seccomp profile. */}}
{{- define "op.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Every container's security context: read-only root, no capabilities. */}}
{{- define "op.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* The Strimzi bootstrap address of the SCRAM listener. */}}
{{- define "op.bootstrap" -}}
{{ printf "%s-kafka-bootstrap:%d" .Values.kafka.cluster (int .Values.kafka.port) }}
{{- end -}}

{{/* The registry's URL inside the cluster. */}}
{{- define "op.registryUrl" -}}
{{ printf "http://%s-registry:8080" (include "op.fullname" .) }}
{{- end -}}

{{/*
The Kafka client of a service: (dict "ctx" $ "user" "payment" "prefix" "PAYMENT").
env: KAFKA_CLIENT_CONFIG names the librdkafka properties file of the ConfigMap
<fullname>-kafka-client (bootstrap, SASL_SSL, SCRAM-SHA-512, user name, the cluster CA);
the password comes from the KafkaUser's Secret (key `password`) as
<PREFIX>__KAFKA__SECURITY__PASSWORD, which eventbus merges with the file. Strimzi's Secret
has no properties file of its own, and the password must not sit in a ConfigMap.
*/}}
{{- define "op.kafkaEnv" -}}
- name: KAFKA_CLIENT_CONFIG
  value: /etc/order-pipeline/kafka/{{ .user }}.conf
- name: {{ .prefix }}__KAFKA__SECURITY__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .user }}
      key: password
- name: REGISTRY_URL
  value: {{ include "op.registryUrl" .ctx }}
{{- end -}}

{{- define "op.kafkaMounts" -}}
- name: kafka-client
  mountPath: /etc/order-pipeline/kafka
  readOnly: true
- name: kafka-ca
  mountPath: /etc/order-pipeline/kafka-ca
  readOnly: true
{{- end -}}

{{- define "op.kafkaVolumes" -}}
- name: kafka-client
  configMap:
    name: {{ include "op.fullname" . }}-kafka-client
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.cluster }}-cluster-ca-cert
    items:
      - key: ca.crt
        path: ca.crt
{{- end -}}

{{/*
The init container that registers every event schema before a service starts (the
services refuse to start with an unregistered schema). Idempotent; until the registry
answers it fails and the kubelet retries it.
*/}}
{{- define "op.registerSchemas" -}}
- name: register-schemas
  image: {{ include "op.image" (dict "ctx" . "name" "busctl") }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: [schemas, register]
  env:
    - name: REGISTRY_URL
      value: {{ include "op.registryUrl" . }}
  resources:
    requests: {cpu: 10m, memory: 32Mi}
    limits: {memory: 64Mi}
  securityContext:
    {{- include "op.containerSecurityContext" . | nindent 4 }}
{{- end -}}

{{/* An HTTP(S) probe: (dict "path" "/healthz" "port" "http" "tls" true). */}}
{{- define "op.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
  scheme: {{ if .tls }}HTTPS{{ else }}HTTP{{ end }}
{{- end -}}

{{/*
A PodDisruptionBudget: (dict "ctx" $ "component" "payment" "rule" "maxUnavailable: 1").
*/}}
{{- define "op.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "op.fullname" .ctx }}-{{ .component }}
  labels:
    {{- include "op.labels" . | nindent 4 }}
spec:
  {{ .rule }}
  selector:
    matchLabels:
      {{- include "op.selector" . | nindent 6 }}
{{- end -}}
