#!/usr/bin/env bash
# Install the pinned Keycloak server distribution for vmcp's integration tests.
#
#   scripts/keycloak-install.sh            -> installs (or reuses) and prints KC home
#   KC_VERSION=26.4.7 scripts/keycloak-install.sh   (override the pin; keep >= 26.4.4)
#
# What it does (idempotent; a second run only prints the path):
#   1. resolves org.keycloak:keycloak-quarkus-dist:<ver>:tar.gz from Maven Central with
#      `mvn dependency:copy` into <repo>/.cache/keycloak/ (no other network access needed);
#   2. unpacks it to <repo>/.cache/keycloak/keycloak-<ver>/ (atomically: tmp dir + rename);
#   3. copies tests/fixtures/keycloak/realm-vmcp.json to <home>/data/import/ so that
#      `bin/kc.sh start-dev --import-realm` imports the `vmcp` realm;
#   4. prints progress on stderr and, as the LAST line on stdout, the absolute Keycloak home.
#
# Java: Keycloak 26.x supports JDK 17, 21 and 25; the pinned 26.7.3 was verified to start on
# the machine's default OpenJDK 17, so no JAVA_HOME is needed. To use another JDK, export
# KC_JAVA_HOME (e.g. /usr/lib/jvm/temurin-25-jdk-amd64); this script then checks it and
# reports "JAVA_HOME=<dir>" on stderr -- callers should run kc.sh with JAVA_HOME=$KC_JAVA_HOME.
# kc.sh itself uses $JAVA_HOME/bin/java when JAVA_HOME is set, else `java` from PATH.
#
# Options:
#   --warm   after installing, start Keycloak once with the recommended dev flags (see
#            KC_DEV_BUILD_OPTS below) and stop it once the vmcp realm answers. start-dev
#            re-runs Quarkus "augmentation" (25-65 s on 2 busy cores) whenever its build-time
#            options (--db, --features, --health-enabled, ...) differ from the last run; warming
#            stores that result in <home>/lib/quarkus so the first test start is not slower.
#            Skipped when <home>/.vmcp-warm records the same options. `kc.sh build` does NOT
#            help here: start-dev re-augments after a prod-profile build.
#
# Recommended test start (same build options as --warm; see tests/fixtures/keycloak/README.md):
#   KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=admin \
#   JAVA_OPTS_APPEND=-XX:TieredStopAtLevel=1 \
#   <home>/bin/kc.sh start-dev --http-host=127.0.0.1 --http-port=<free> --db=dev-mem --import-realm
#
# The cache (.cache/keycloak/) is not versioned (it has its own .gitignore).
set -euo pipefail

warm=0
for arg in "$@"; do
  case "$arg" in
    --warm) warm=1 ;;
    -h|--help) sed -n '2,40p' "$0" >&2; exit 0 ;;
    *) printf 'keycloak-install: unknown argument %s\n' "$arg" >&2; exit 2 ;;
  esac
done

# Build-time options used by the tests' start-dev command (must match to avoid re-augmentation).
KC_DEV_BUILD_OPTS="--db=dev-mem"

KC_VERSION="${KC_VERSION:-26.7.3}"
# Maven plugin pinned so that the resolution does not depend on the local repo's state.
MVN_DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
cache_dir="$repo_root/.cache/keycloak"
kc_home="$cache_dir/keycloak-$KC_VERSION"
archive="$cache_dir/keycloak-quarkus-dist-$KC_VERSION.tar.gz"
realm_file="$repo_root/tests/fixtures/keycloak/realm-vmcp.json"

log() { printf 'keycloak-install: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- Java check -------------------------------------------------------------------------
if [[ -n "${KC_JAVA_HOME:-}" ]]; then
  java_bin="$KC_JAVA_HOME/bin/java"
  [[ -x "$java_bin" ]] || die "KC_JAVA_HOME=$KC_JAVA_HOME has no bin/java"
elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  java_bin="$JAVA_HOME/bin/java"
else
  java_bin="$(command -v java || true)"
  [[ -n "$java_bin" ]] || die "no java on PATH (need JDK 17, 21 or 25; set KC_JAVA_HOME)"
fi
java_major="$("$java_bin" -XshowSettings:properties -version 2>&1 \
  | sed -n 's/^ *java.specification.version = //p' | head -1)"
case "$java_major" in
  17|21|25) ;;
  *) die "$java_bin is Java '$java_major'; Keycloak 26 needs 17, 21 or 25 (set KC_JAVA_HOME)";;
esac
if [[ -n "${KC_JAVA_HOME:-}" ]]; then
  log "JAVA_HOME=$KC_JAVA_HOME (Java $java_major): run kc.sh with this JAVA_HOME"
else
  log "using $java_bin (Java $java_major); no JAVA_HOME override needed"
fi

mkdir -p "$cache_dir"
[[ -f "$cache_dir/.gitignore" ]] || printf '*\n' >"$cache_dir/.gitignore"

# --- fetch + unpack -----------------------------------------------------------------------
if [[ -x "$kc_home/bin/kc.sh" && -f "$kc_home/.vmcp-installed" ]]; then
  log "Keycloak $KC_VERSION already installed at $kc_home"
else
  if [[ ! -s "$archive" ]]; then
    command -v mvn >/dev/null || die "mvn not found (needed to fetch Keycloak from Maven Central)"
    log "fetching org.keycloak:keycloak-quarkus-dist:$KC_VERSION:tar.gz with Maven (~170 MB)..."
    tmp_dl="$(mktemp -d "$cache_dir/.dl.XXXXXX")"
    # -B/-q: no colours/progress; dependency:copy writes <artifactId>-<version>.<type>
    if ! mvn -B -q -Dstyle.color=never "$MVN_DEP_PLUGIN:copy" \
          "-Dartifact=org.keycloak:keycloak-quarkus-dist:$KC_VERSION:tar.gz" \
          "-DoutputDirectory=$tmp_dl" -Dmdep.overWriteReleases=true >"$tmp_dl.log" 2>&1; then
      cat "$tmp_dl.log" >&2
      rm -rf "$tmp_dl" "$tmp_dl.log"
      die "mvn dependency:copy failed (see output above)"
    fi
    rm -f "$tmp_dl.log"
    mv -f "$tmp_dl/keycloak-quarkus-dist-$KC_VERSION.tar.gz" "$archive"
    rm -rf "$tmp_dl"
  else
    log "reusing $archive"
  fi

  log "unpacking to $kc_home ..."
  tmp_unpack="$(mktemp -d "$cache_dir/.unpack.XXXXXX")"
  tar -xzf "$archive" -C "$tmp_unpack" || { rm -rf "$tmp_unpack"; die "tar failed (corrupt archive? delete $archive)"; }
  [[ -x "$tmp_unpack/keycloak-$KC_VERSION/bin/kc.sh" ]] \
    || { rm -rf "$tmp_unpack"; die "archive has no keycloak-$KC_VERSION/bin/kc.sh"; }
  rm -rf "$kc_home"
  mv "$tmp_unpack/keycloak-$KC_VERSION" "$kc_home"
  rm -rf "$tmp_unpack"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$kc_home/.vmcp-installed"
  rm -f "$archive"   # Maven's local repository (~/.m2) keeps a copy; no need for a third
  log "installed Keycloak $KC_VERSION"
fi

# --- realm fixture --------------------------------------------------------------------------
# Always refreshed so fixture edits take effect. Note: --import-realm skips a realm that
# already exists in the (persistent, dev-file H2) database; tests should start with
# --db=dev-mem or a fresh data dir to get a pristine realm.
if [[ -f "$realm_file" ]]; then
  mkdir -p "$kc_home/data/import"
  cp -f "$realm_file" "$kc_home/data/import/realm-vmcp.json"
  log "realm fixture copied to $kc_home/data/import/realm-vmcp.json"
else
  log "WARNING: $realm_file not found; no realm to import"
fi

# --- optional warm-up -----------------------------------------------------------------------
if [[ "$warm" == 1 ]]; then
  if [[ -f "$kc_home/.vmcp-warm" && "$(cat "$kc_home/.vmcp-warm")" == "$KC_DEV_BUILD_OPTS" ]]; then
    log "already warmed for: $KC_DEV_BUILD_OPTS"
  else
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18181)"
    warm_log="$cache_dir/warm.log"
    log "warming (start-dev $KC_DEV_BUILD_OPTS on 127.0.0.1:$port; log: $warm_log) ..."
    started=$SECONDS
    # shellcheck disable=SC2086 # KC_DEV_BUILD_OPTS is a list of flags
    env ${KC_JAVA_HOME:+JAVA_HOME="$KC_JAVA_HOME"} \
      KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=admin \
      JAVA_OPTS_APPEND="-XX:TieredStopAtLevel=1" \
      "$kc_home/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$port" \
      $KC_DEV_BUILD_OPTS --import-realm >"$warm_log" 2>&1 &
    kc_pid=$!
    ready=0
    for _ in $(seq 1 600); do
      if curl -sf -o /dev/null "http://127.0.0.1:$port/realms/vmcp/.well-known/openid-configuration"; then
        ready=1; break
      fi
      kill -0 "$kc_pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -TERM "$kc_pid" 2>/dev/null || true   # kc.sh forwards TERM to the JVM
    wait "$kc_pid" 2>/dev/null || true
    if [[ "$ready" == 1 ]]; then
      printf '%s' "$KC_DEV_BUILD_OPTS" >"$kc_home/.vmcp-warm"
      log "warm-up done in $((SECONDS - started)) s"
    else
      tail -20 "$warm_log" >&2 || true
      die "warm-up start of Keycloak failed (see $warm_log)"
    fi
  fi
fi

printf '%s\n' "$kc_home"
