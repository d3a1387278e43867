#!/bin/sh
# The runtime base of every vmcp image (Dockerfile, stage `base`), written into the folder $1:
# the whole image is FROM scratch + these files + one static binary. No shell, no libc, no cp.
#   etc/passwd, etc/group   root and nonroot (UID/GID 65532), so tools show a user name
#   tmp/                    mode 1777 (the only folder a pod mounts writable, as an emptyDir)
#   etc/ssl/certs/ca-certificates.crt   CA bundle for TLS to an IdP or Redis (if the builder has one)
# POSIX sh on purpose: it runs in the Alpine build stage and on the host (`make images`).
set -eu
out=${1:?usage: image-rootfs.sh OUT_DIR}
mkdir -p "$out/etc/ssl/certs" "$out/tmp"
chmod 1777 "$out/tmp"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$out/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$out/etc/group"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
else
  echo "image-rootfs.sh: no /etc/ssl/certs/ca-certificates.crt on the builder; the image has no CA bundle" >&2
fi
chmod 0644 "$out/etc/passwd" "$out/etc/group"
