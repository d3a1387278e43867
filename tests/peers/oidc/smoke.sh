#!/usr/bin/env bash
# End-to-end check of provider.mjs (starts it on a free port, runs curl checks, stops it).
#   npm ci --prefix tests/peers/oidc && tests/peers/oidc/smoke.sh
# Needs node, curl, python3. Ends with "N passed, N failed".
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TE=urn:ietf:params:oauth:grant-type:token-exchange
ATT=urn:ietf:params:oauth:token-type:access_token

out="$(mktemp)"; err="$(mktemp)"
node "$here/provider.mjs" --port 0 >"$out" 2>"$err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$out" "$err"' EXIT
for _ in $(seq 1 200); do grep -q '^READY ' "$out" && break; kill -0 $pid 2>/dev/null || { cat "$err" >&2; exit 1; }; sleep 0.05; done
port="$(sed -n 's/^READY //p' "$out")"
ISS="http://127.0.0.1:$port"

pass=0; fail=0
check() { if [[ "$2" == 0 ]]; then pass=$((pass + 1)); echo "PASS $1"; else fail=$((fail + 1)); echo "FAIL $1 ${3:-}"; fi; }
jget() { python3 -c 'import sys,json; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }
jwt() { python3 -c 'import sys,json,base64; s=sys.argv[1].split(".")[int(sys.argv[2])]; print(json.dumps(json.loads(base64.urlsafe_b64decode(s+"="*(-len(s)%4)))))' "$1" "$2" 2>/dev/null; }
split() { body="$(printf '%s' "$1" | sed '$d')"; status="$(printf '%s' "$1" | tail -n1)"; }
post() { curl -s -w '\n%{http_code}' "$@" "$ISS/token"; }
alice() { jget "$(curl -s -d grant_type=password -d client_id=vmcp-cli -d username=alice -d password=alice-pw "$ISS/token")" 'd["access_token"]'; }

disc="$(curl -s "$ISS/.well-known/openid-configuration")"
[[ "$(jget "$disc" 'd["issuer"]+" "+d["token_endpoint"]+" "+d["jwks_uri"]')" == "$ISS $ISS/token $ISS/jwks" ]]; check "discovery issuer/token/jwks" $? "$disc"
[[ "$(jget "$disc" '"'$TE'" in d["grant_types_supported"] and "password" in d["grant_types_supported"]')" == True ]]; check "discovery lists password + token-exchange grants" $?

split "$(post -d grant_type=password -d client_id=vmcp-cli -d username=alice -d password=alice-pw)"
AT="$(jget "$body" 'd["access_token"]')"; h="$(jwt "$AT" 0)"; p="$(jwt "$AT" 1)"
[[ "$status" == 200 ]]; check "password grant -> 200" $? "$status $body"
[[ "$(jget "$h" 'd["alg"]+" "+d["typ"]')" == "RS256 at+jwt" ]]; check "header alg=RS256 typ=at+jwt" $? "$h"
[[ "$(jget "$p" 'd["aud"]+" "+d["sub"]+" "+d["azp"]+" "+d["client_id"]+" "+d["iss"]')" == "vmcp-gateway alice-sub vmcp-cli vmcp-cli $ISS" ]]; check "user token aud/sub/azp/client_id/iss" $? "$p"
kid0="$(jget "$h" 'd["kid"]')"
[[ "$(jget "$(curl -s "$ISS/jwks")" "[k['kid'] for k in d['keys']]==['$kid0']")" == True ]]; check "JWKS == [token kid]" $?

split "$(post -u vmcp-gateway:gateway-secret -d grant_type=$TE -d subject_token="$AT" -d subject_token_type=$ATT -d audience=backend-a)"
xp="$(jwt "$(jget "$body" 'd["access_token"]')" 1)"
[[ "$status" == 200 && "$(jget "$body" 'd["issued_token_type"]+" "+d["token_type"]+" "+str(d["expires_in"])')" == "$ATT Bearer 300" ]]; check "exchange (basic) response fields" $? "$status $body"
[[ "$(jget "$xp" 'd["aud"]+" "+d["sub"]+" "+d["azp"]+" "+d["act"]["sub"]')" == "backend-a alice-sub vmcp-gateway vmcp-gateway" ]]; check "exchanged token aud/sub/azp/act" $? "$xp"
split "$(post -d client_id=vmcp-gateway -d client_secret=gateway-secret -d grant_type=$TE -d subject_token="$AT" -d subject_token_type=$ATT -d audience=backend-b)"
[[ "$status" == 200 && "$(jget "$(jwt "$(jget "$body" 'd["access_token"]')" 1)" 'd["aud"]')" == backend-b ]]; check "exchange (post) aud=backend-b" $? "$status $body"

split "$(post -u vmcp-gateway:wrong -d grant_type=$TE -d subject_token="$AT" -d subject_token_type=$ATT -d audience=backend-a)"
[[ "$status" == 401 && "$body" == '{"error":"invalid_client","error_description":"client authentication failed"}' ]]; check "wrong secret -> 401 invalid_client" $? "$status $body"
split "$(post -u vmcp-gateway:gateway-secret -d grant_type=$TE -d subject_token="$AT" -d subject_token_type=$ATT -d audience=backend-c)"
[[ "$status" == 400 && "$body" == '{"error":"invalid_target","error_description":"audience backend-c is not allowed for client vmcp-gateway"}' ]]; check "not-allowed audience -> 400 invalid_target" $? "$status $body"

curl -s -o /dev/null -X POST -d '{"audience":"backend-b","error":"invalid_target"}' "$ISS/test/fail-exchange"
split "$(post -u vmcp-gateway:gateway-secret -d grant_type=$TE -d subject_token="$AT" -d subject_token_type=$ATT -d audience=backend-b)"
[[ "$status" == 400 && "$(jget "$body" 'd["error"]')" == invalid_target ]]; check "fail-exchange hook forces invalid_target" $? "$status $body"
curl -s -o /dev/null -X DELETE "$ISS/test/fail-exchange"

rot="$(curl -s -X POST "$ISS/test/rotate-keys")"
kid1="$(jget "$rot" 'd["kid"]')"
AT2="$(alice)"
[[ -n "$kid1" && "$kid1" != "$kid0" && "$(jget "$(jwt "$AT2" 0)" 'd["kid"]')" == "$kid1" ]]; check "rotate-keys: new tokens carry the new kid" $? "$rot"
[[ "$(jget "$(curl -s "$ISS/jwks")" "[k['kid'] for k in d['keys']]==['$kid1']")" == True ]]; check "JWKS has only the new kid" $?
split "$(post -u vmcp-gateway:gateway-secret -d grant_type=$TE -d subject_token="$AT" -d subject_token_type=$ATT -d audience=backend-a)"
[[ "$status" == 400 && "$body" == '{"error":"invalid_grant","error_description":"subject_token signed with an unknown key"}' ]]; check "old-kid subject token -> invalid_grant" $? "$status $body"

echo "$pass passed, $fail failed"
[[ "$fail" == 0 ]]
