{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name + chart name (once), truncated to 63 characters.
*/}}
{{- define "relay.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "relay.labels" -}}
helm.sh/chart: {{ include "relay.chart" . }}
app.kubernetes.io/name: {{ include "relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "relay.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: datagrid-relay
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of the relay's pods. They never change across upgrades:
Deployment selectors are immutable. The component keeps the test and hook
pods out of the Service, the PDB and the NetworkPolicy.
*/}}
{{- define "relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{/*
Labels of the relay's own objects (Deployment, Service, ...).
*/}}
{{- define "relay.gatewayLabels" -}}
{{ include "relay.labels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag: the chart's appVersion unless overridden.
*/}}
{{- define "relay.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
Image reference; a digest wins over the tag.
*/}}
{{- define "relay.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "relay.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the sensitive values.
*/}}
{{- define "relay.secretName" -}}
{{- default (include "relay.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
RELAY_PUBLIC_URL: the publicUrl value, required in register mode and with an
Ingress.
*/}}
{{- define "relay.publicUrl" -}}
{{- if or (eq .Values.mode "register") .Values.ingress.enabled }}
{{- required "publicUrl is required in register mode and with ingress.enabled: the https URL Datagrid calls, e.g. https://relay.example.com/webhooks/datagrid" .Values.publicUrl }}
{{- else }}
{{- .Values.publicUrl }}
{{- end }}
{{- end }}

{{/*
Host of the Ingress rule: ingress.host, else the host of publicUrl.
*/}}
{{- define "relay.ingressHost" -}}
{{- $u := urlParse (include "relay.publicUrl" .) }}
{{- default (get $u "hostname") .Values.ingress.host }}
{{- end }}

{{/*
Where the relay serves deliveries: the path of publicUrl ("/" when the URL
has none), or the relay's default /webhooks/datagrid without a publicUrl.
*/}}
{{- define "relay.deliveryPath" -}}
{{- $url := include "relay.publicUrl" . }}
{{- if $url }}
{{- default "/" (get (urlParse $url) "path") }}
{{- else }}
{{- "/webhooks/datagrid" }}
{{- end }}
{{- end }}

{{/*
Number of replicas that run at the least: the HPA's minimum or replicaCount.
*/}}
{{- define "relay.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
Fails the render on combinations the schema cannot express.
*/}}
{{- define "relay.validate" -}}
{{- if hasKey .Values "startupProbe" }}
{{- fail "startupProbe was removed in chart 0.2.0: the relay serves /healthz as soon as it starts and waits for NATS and registration in the background (see /readyz), so a startup probe waited for nothing. Remove startupProbe from your values." }}
{{- end }}
{{- if hasKey .Values.prometheusRule "refusedRatio" }}
{{- fail "prometheusRule.refusedRatio was removed in chart 0.2.0: DatagridRelayDeliveriesRefused now fires on a count of signed refusals (prometheusRule.refusedMinCount), since unsigned internet noise made any ratio page. Remove refusedRatio from your values." }}
{{- end }}
{{- if not (trim .Values.nats.url) }}
{{- fail "nats.url is required: the NATS server URL(s), e.g. nats://nats.nats.svc:4222" }}
{{- end }}
{{- if eq .Values.mode "register" }}
{{- if and (not .Values.existingSecret) (not .Values.datagrid.apiKey) }}
{{- fail "mode register needs datagrid.apiKey or existingSecret (with the key secretKeys.apiKey)" }}
{{- end }}
{{- $_ := include "relay.publicUrl" . }}
{{- else }}
{{- if and (not .Values.existingSecret) (not .Values.webhookSecret) }}
{{- fail "mode static needs webhookSecret or existingSecret (with the key secretKeys.webhookSecret)" }}
{{- end }}
{{- if .Values.deregisterHook.enabled }}
{{- fail "deregisterHook.enabled needs mode register: in static mode the relay registers nothing" }}
{{- end }}
{{- end }}
{{- if .Values.ingress.enabled }}
{{- $_ := include "relay.publicUrl" . }}
{{- end }}
{{- $grace := .Values.terminationGracePeriodSeconds | int }}
{{- $needed := add (.Values.config.shutdownTimeoutSeconds | int) (.Values.preStopSleepSeconds | int) }}
{{- if le $grace $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.shutdownTimeoutSeconds + preStopSleepSeconds (%d), or Kubernetes kills the relay mid-shutdown" $grace $needed) }}
{{- end }}
{{- if lt (.Values.config.maxInflightBytes | int64) (.Values.config.maxBodyBytes | int64) }}
{{- fail (printf "config.maxInflightBytes (%d) must be at least config.maxBodyBytes (%d): one delivery must fit the budget" (.Values.config.maxInflightBytes | int64) (.Values.config.maxBodyBytes | int64)) }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs: the Gateway(s) the route attaches to" }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not (or .Values.publicUrl .Values.httpRoute.hostnames)) }}
{{- fail "httpRoute.enabled needs publicUrl (or httpRoute.hostnames): the route takes its host from it" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (.Values.autoscaling.maxReplicas | int) (.Values.autoscaling.minReplicas | int)) }}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- $auth := .Values.nats.auth }}
{{- if and (eq $auth.type "userPassword") (not $auth.password) }}
{{- fail "nats.auth.type userPassword needs nats.auth.password or existingSecret" }}
{{- end }}
{{- if and (eq $auth.type "token") (not $auth.token) }}
{{- fail "nats.auth.type token needs nats.auth.token or existingSecret" }}
{{- end }}
{{- if and (eq $auth.type "creds") (not $auth.creds) }}
{{- fail "nats.auth.type creds needs nats.auth.creds or existingSecret" }}
{{- end }}
{{- if and (eq $auth.type "nkey") (not $auth.nkeySeed) }}
{{- fail "nats.auth.type nkey needs nats.auth.nkeySeed or existingSecret" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.nats.auth.type "userPassword") (not .Values.nats.auth.user) }}
{{- fail "nats.auth.type userPassword needs nats.auth.user" }}
{{- end }}
{{- if .Values.nats.tls.enabled }}
{{- if not .Values.nats.tls.secretName }}
{{- fail "nats.tls.enabled needs nats.tls.secretName" }}
{{- end }}
{{- if not (or .Values.nats.tls.caKey .Values.nats.tls.certKey) }}
{{- fail "nats.tls.enabled needs nats.tls.caKey, or nats.tls.certKey and nats.tls.keyKey (a tls:// URL alone needs no files)" }}
{{- end }}
{{- if ne (empty .Values.nats.tls.certKey) (empty .Values.nats.tls.keyKey) }}
{{- fail "nats.tls.certKey and nats.tls.keyKey go together (mutual TLS) or not at all" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Pod spec shared by the Deployment and the deregister hook Job: security
contexts, the configuration, secrets and NATS files. Call with a dict:
  root: the chart context; args: container args; resources: container
  resources; probes: whether to render ports and probes.
*/}}
{{- define "relay.podSpec" -}}
{{- $root := .root }}
{{- with $root -}}
serviceAccountName: {{ include "relay.serviceAccountName" . }}
automountServiceAccountToken: false
# The relay reads no Service variables; a namespace with many Services would
# otherwise fill its environment.
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
containers:
  - name: relay
    image: {{ include "relay.image" . | quote }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args:
      {{- toYaml $.args | nindent 6 }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    envFrom:
      - configMapRef:
          name: {{ include "relay.fullname" . }}
    env:
      {{- if eq .Values.mode "register" }}
      - name: DATAGRID_API_KEY
        valueFrom:
          secretKeyRef:
            name: {{ include "relay.secretName" . }}
            key: {{ .Values.secretKeys.apiKey }}
      {{- else }}
      - name: RELAY_WEBHOOK_SECRET
        valueFrom:
          secretKeyRef:
            name: {{ include "relay.secretName" . }}
            key: {{ .Values.secretKeys.webhookSecret }}
      {{- end }}
      {{- if eq .Values.nats.auth.type "userPassword" }}
      - name: NATS_PASSWORD
        valueFrom:
          secretKeyRef:
            name: {{ include "relay.secretName" . }}
            key: {{ .Values.secretKeys.natsPassword }}
      {{- else if eq .Values.nats.auth.type "token" }}
      - name: NATS_TOKEN
        valueFrom:
          secretKeyRef:
            name: {{ include "relay.secretName" . }}
            key: {{ .Values.secretKeys.natsToken }}
      {{- end }}
      {{- if and $.resources $.resources.limits $.resources.limits.memory }}
      # The Go runtime's soft memory limit: the container's memory limit,
      # read from the pod spec (the binary does not read its cgroup).
      - name: GOMEMLIMIT
        valueFrom:
          resourceFieldRef:
            containerName: relay
            resource: limits.memory
            divisor: "1"
      {{- end }}
      {{- with .Values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- if $.probes }}
    ports:
      - name: http
        containerPort: {{ .Values.containerPorts.http }}
        protocol: TCP
      - name: admin
        containerPort: {{ .Values.containerPorts.admin }}
        protocol: TCP
    {{- range $name, $path := dict "livenessProbe" "/healthz" "readinessProbe" "/readyz" }}
    {{- $p := get $root.Values $name }}
    {{- if $p.enabled }}
    {{ $name }}:
      httpGet:
        path: {{ $path }}
        port: admin
      {{- toYaml (omit $p "enabled") | nindent 6 }}
    {{- end }}
    {{- end }}
    {{- if gt (.Values.preStopSleepSeconds | int) 0 }}
    {{- if and .Values.capabilitiesCheck (semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version) }}
    {{- fail (printf "preStopSleepSeconds needs the preStop sleep action of Kubernetes >= 1.30; this cluster is %s. Set preStopSleepSeconds=0 (the image has no shell for a sleep command), or upgrade the cluster." .Capabilities.KubeVersion.Version) }}
    {{- end }}
    lifecycle:
      preStop:
        sleep:
          seconds: {{ .Values.preStopSleepSeconds | int }}
    {{- end }}
    {{- end }}
    resources:
      {{- toYaml $.resources | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      {{- if has .Values.nats.auth.type (list "creds" "nkey") }}
      - name: nats-auth
        mountPath: /etc/relay/nats-auth
        readOnly: true
      {{- end }}
      {{- if .Values.nats.tls.enabled }}
      - name: nats-tls
        mountPath: /etc/relay/nats-tls
        readOnly: true
      {{- end }}
      {{- with .Values.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 16Mi
  {{- if has .Values.nats.auth.type (list "creds" "nkey") }}
  - name: nats-auth
    secret:
      secretName: {{ include "relay.secretName" . }}
      defaultMode: 0440
      items:
        {{- if eq .Values.nats.auth.type "creds" }}
        - key: {{ .Values.secretKeys.natsCreds }}
          path: nats.creds
        {{- else }}
        - key: {{ .Values.secretKeys.natsNkeySeed }}
          path: nkey.seed
        {{- end }}
  {{- end }}
  {{- if .Values.nats.tls.enabled }}
  - name: nats-tls
    secret:
      secretName: {{ .Values.nats.tls.secretName }}
      defaultMode: 0440
      items:
        {{- with .Values.nats.tls.caKey }}
        - key: {{ . }}
          path: ca.crt
        {{- end }}
        {{- with .Values.nats.tls.certKey }}
        - key: {{ . }}
          path: tls.crt
        {{- end }}
        {{- with .Values.nats.tls.keyKey }}
        - key: {{ . }}
          path: tls.key
        {{- end }}
  {{- end }}
  {{- with .Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
Seconds in a Prometheus duration such as 6h, 1d or 1h30m (the schema
allows only those), for comparisons with time() in PromQL.
*/}}
{{- define "relay.durationSeconds" -}}
{{- $unit := dict "ms" 0.001 "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 "y" 31536000 }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" . -1 }}
{{- $n := regexFind "^[0-9]+" . }}
{{- $total = addf $total (mulf (float64 $n) (get $unit (trimPrefix $n .))) }}
{{- end }}
{{- $total | int64 }}
{{- end }}

{{/*
Fails the render when an enabled object's API is not served by the cluster,
with a message of the chart's own instead of Helm's raw "no matches for
kind". Call with a dict: root, api (group/version), what (the value that
enabled it), kind. capabilitiesCheck=false skips the check for renders
that cannot see the cluster (helm lint, helm template without
--api-versions).
*/}}
{{- define "relay.requireAPI" -}}
{{- if and .root.Values.capabilitiesCheck (not (.root.Capabilities.APIVersions.Has .api)) }}
{{- fail (printf "%s needs the %s API (kind %s), which this cluster does not serve: install its CRDs first (for monitoring.coreos.com: the Prometheus Operator), or turn %s off. Rendering offline? Pass --api-versions %s, or set capabilitiesCheck=false." .what .api .kind .what .api) }}
{{- end }}
{{- end }}
