{{/* The chart's name, or nameOverride. */}}
{{- define "parley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The base name of every object: fullnameOverride, the release name when it contains the
chart's name, or "<release>-<name>". */}}
{{- define "parley.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "parley.operatorName" -}}
{{- printf "%s-operator" (include "parley.fullname" .) }}
{{- end }}

{{- define "parley.crdApplyName" -}}
{{- printf "%s-crd-apply" (include "parley.fullname" .) }}
{{- end }}

{{- define "parley.serviceAccountName" -}}
{{- default (include "parley.operatorName" .) .Values.serviceAccount.name }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "parley.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "parley.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: parley
{{- end }}

{{/* What selects the operator's pods (a Deployment's selector never changes). */}}
{{- define "parley.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* An image reference from {repository, tag, digest}: by digest when one is given, else by
tag (default: the chart's appVersion). Call with (dict "image" ... "root" $). */}}
{{- define "parley.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* The rules of one ClusterRole of files/rbac.yaml (the output of `parley operator rbac`,
generated from operator/parley_operator/rbac.py). Call with (dict "root" $ "role" NAME). */}}
{{- define "parley.rulesOf" -}}
{{- $found := list }}
{{- range (.root.Files.Get "files/rbac.yaml" | fromYaml).items }}
{{- if eq .metadata.name $.role }}
{{- $found = .rules }}
{{- end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "files/rbac.yaml has no ClusterRole %s: regenerate it with `parley operator rbac`" .role) }}
{{- end }}
{{- toYaml $found }}
{{- end }}

{{/* Node placement of the operator's pods and the hook's. */}}
{{- define "parley.placement" -}}
{{- with .Values.operator.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.operator.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.operator.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The pod and container security of the operator's image: non-root, nothing to escalate. */}}
{{- define "parley.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "parley.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}
