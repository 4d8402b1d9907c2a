{{/*
Canonical names. Workload resources are called k8s-ws-proxy whatever the
release is called: guacd configurations, NetworkPolicies of other teams and
runbooks refer to them by name. One release per cluster (the ClusterRole is
cluster-scoped, and one DaemonSet already covers every node).
*/}}
{{- define "k8s-ws-proxy.name" -}}k8s-ws-proxy{{- end -}}
{{- define "k8s-ws-proxy.bootstrapName" -}}k8s-ws-proxy-bootstrap{{- end -}}
{{- define "k8s-ws-proxy.servingSecret" -}}
{{- if .Values.tls.certManager.enabled -}}k8s-ws-proxy-tls{{- else -}}{{ .Values.tls.existingSecret }}{{- end -}}
{{- end -}}

{{- define "k8s-ws-proxy.selectorLabels" -}}
app.kubernetes.io/name: k8s-ws-proxy
app.kubernetes.io/component: proxy
{{- end -}}

{{- define "k8s-ws-proxy.labels" -}}
app.kubernetes.io/name: k8s-ws-proxy
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | quote }}
{{- end -}}

{{/*
The one image of the chart, used by the DaemonSet and the hook Job alike.
Fails early with a message naming the value to set, instead of rendering a
reference that a runtime would resolve against docker.io.
*/}}
{{- define "k8s-ws-proxy.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry -}}
{{- if not .Values.image.tag -}}
{{- fail "image.tag is empty: set image.tag to the k8s-ws-proxy release to run (for example --set image.tag=v0.1.0)" -}}
{{- end -}}
{{- if not $registry -}}
{{- fail "image.registry is empty: every image needs an explicit registry host (set image.registry or global.imageRegistry)" -}}
{{- end -}}
{{- $host := first (splitList "/" $registry) -}}
{{- if not (or (contains "." $host) (contains ":" $host) (eq $host "localhost")) -}}
{{- fail (printf "registry %q does not start with a registry host (a name with a dot or a port, or localhost); the runtime would read it as a docker.io path" $registry) -}}
{{- end -}}
{{- $ref := printf "%s/%s:%s" (trimSuffix "/" $registry) .Values.image.repository .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- $ref = printf "%s@%s" $ref .Values.image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* Restricted pod and container security contexts (Pod Security "restricted"). */}}
{{- define "k8s-ws-proxy.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "k8s-ws-proxy.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Cross-value checks that the schema cannot express. Included once by the
DaemonSet so every failure shows at render time, not as a pod stuck in
ContainerCreating on a Secret nothing will create.
*/}}
{{- define "k8s-ws-proxy.validate" -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.proxy.shutdownGraceSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than proxy.shutdownGraceSeconds (%d), or the kubelet kills sessions mid-drain" (int .Values.terminationGracePeriodSeconds) (int .Values.proxy.shutdownGraceSeconds)) -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- if and .Values.tls.certManager.enabled .Values.tls.existingSecret -}}
{{- fail "tls.existingSecret and tls.certManager.enabled are mutually exclusive: pick one source for the serving certificate" -}}
{{- end -}}
{{- if not (or .Values.tls.certManager.enabled .Values.tls.existingSecret) -}}
{{- fail "tls.enabled needs a certificate: set tls.existingSecret (a kubernetes.io/tls Secret) or tls.certManager.enabled=true" -}}
{{- end -}}
{{- if and .Values.tls.clientAuth.enabled (not (or .Values.tls.clientAuth.caSecret .Values.tls.certManager.enabled)) -}}
{{- fail "tls.clientAuth.enabled needs the client CA: set tls.clientAuth.caSecret (or use tls.certManager, whose ca.crt is used)" -}}
{{- end -}}
{{- else -}}
{{- if or .Values.tls.clientAuth.enabled .Values.tls.certManager.enabled -}}
{{- fail "tls.clientAuth and tls.certManager need tls.enabled=true" -}}
{{- end -}}
{{- end -}}
{{- if .Values.tls.certManager.enabled -}}
{{- if not (.Capabilities.APIVersions.Has "cert-manager.io/v1") -}}
{{- fail "tls.certManager.enabled is true but the cert-manager.io/v1 API is not available in this cluster (install cert-manager first, or use tls.existingSecret; with helm template pass --api-versions cert-manager.io/v1)" -}}
{{- end -}}
{{- if not .Values.tls.certManager.issuerRef.name -}}
{{- fail "tls.certManager.issuerRef.name is empty: name the Issuer or ClusterIssuer that signs the proxy's certificate" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.tls.certManager.guacdClientCertificate.enabled (not .Values.tls.certManager.enabled) -}}
{{- fail "tls.certManager.guacdClientCertificate needs tls.certManager.enabled=true" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
{{- fail "serviceMonitor.enabled is true but the monitoring.coreos.com/v1 API (Prometheus Operator) is not available (with helm template pass --api-versions monitoring.coreos.com/v1)" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.guacd.podSelector) -}}
{{- fail "networkPolicy.guacd.podSelector is empty: it must select guacd's pods (an empty selector would admit every pod)" -}}
{{- end -}}
{{- if and .Values.admin.enabled (or (eq (int .Values.admin.port) (int .Values.proxy.port)) (eq (int .Values.admin.port) (int .Values.proxy.healthPort))) -}}
{{- fail (printf "admin.port (%d) must differ from proxy.port and proxy.healthPort: the admin API has its own listener" (int .Values.admin.port)) -}}
{{- end -}}
{{- if and .Values.revocations.existingConfigMap .Values.revocations.entries -}}
{{- fail "revocations.entries and revocations.existingConfigMap are mutually exclusive: the chart does not write into a ConfigMap it does not own" -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap mounted as --revocations-file. */}}
{{- define "k8s-ws-proxy.revocationsConfigMap" -}}
{{- .Values.revocations.existingConfigMap | default (printf "%s-revocations" (include "k8s-ws-proxy.name" .)) -}}
{{- end -}}
