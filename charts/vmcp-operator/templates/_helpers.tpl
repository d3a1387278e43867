{{/* Full name: the release name, with the chart name unless it is already in it. */}}
{{- define "vmcp-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vmcp-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vmcp-operator.labels" -}}
{{ include "vmcp-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "vmcp-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vmcp-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vmcp-operator.gatewayImage" -}}
{{- include "vmcp-operator.image" (list . .Values.gatewayImage.repository .Values.gatewayImage.tag) -}}
{{- end -}}

{{/*
An image reference: (list $ repository tag). global.imageRegistry, when set, replaces the
registry host of the repository (its first path segment when that has a '.' or ':' or is
localhost) or is put in front of it.
*/}}
{{- define "vmcp-operator.image" -}}
{{- $ctx := index . 0 -}}
{{- $repo := index . 1 -}}
{{- $tag := index . 2 -}}
{{- $registry := "" -}}
{{- with $ctx.Values.global }}{{ $registry = .imageRegistry | default "" }}{{ end -}}
{{- if $registry -}}
{{- $parts := splitList "/" $repo -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $repo = join "/" (rest $parts) -}}
{{- end -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo -}}
{{- end -}}
{{- printf "%s:%s" $repo (default $ctx.Chart.AppVersion $tag) -}}
{{- end -}}

{{/* The namespaces to watch (watchNamespaces plus watchNamespace), as a JSON list; [] = all. */}}
{{- define "vmcp-operator.namespaces" -}}
{{- $ns := list -}}
{{- range .Values.watchNamespaces }}{{ $ns = append $ns . }}{{ end -}}
{{- with .Values.watchNamespace }}{{ $ns = append $ns . }}{{ end -}}
{{- $ns | uniq | toJson -}}
{{- end -}}

{{/*
Whether to render the CRD named by the second argument, (list $ name): crds.install is on and the
CRD either does not exist yet or belongs to this release. A CRD held by another release (or
applied outside Helm) is left alone, so installing under another release name never fails on
"invalid ownership metadata". `helm template` has no cluster: it always renders.
*/}}
{{- define "vmcp-operator.renderCrd" -}}
{{- $ctx := index . 0 -}}
{{- $name := index . 1 -}}
{{- if $ctx.Values.crds.install -}}
{{- $existing := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" $name -}}
{{- if not $existing -}}
true
{{- else -}}
{{- $a := $existing.metadata.annotations | default dict -}}
{{- if and (eq (get $a "meta.helm.sh/release-name") $ctx.Release.Name) (eq (get $a "meta.helm.sh/release-namespace") $ctx.Release.Namespace) -}}
true
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
