#!/usr/bin/env bash
# Install the activator with both initrd integrations and its man page:
#   DESTDIR=/staging PREFIX=/usr pkg/install.sh [path/to/initrd-sysext]
# The binary and the dracut module as dracut/install.sh puts them; the
# initramfs-tools hook and boot script under $INITRAMFSTOOLSDIR (default
# /usr/share/initramfs-tools, the only packaged directory initramfs-tools reads),
# told where the binary is; the man page under $PREFIX/share/man.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${PREFIX:-/usr}
dest=${DESTDIR:-}
itdir=$dest${INITRAMFSTOOLSDIR:-/usr/share/initramfs-tools}

bash "$repo/dracut/install.sh" "$@"
install -d "$itdir/hooks" "$itdir/scripts/init-bottom"
sed "s|^bin=/usr/bin/initrd-sysext$|bin=$prefix/bin/initrd-sysext|" \
    "$repo/initramfs-tools/hooks/initrd-sysext" >"$itdir/hooks/initrd-sysext"
chmod 0755 "$itdir/hooks/initrd-sysext"
install -m 0755 "$repo/initramfs-tools/scripts/init-bottom/initrd-sysext" "$itdir/scripts/init-bottom/"
install -D -m 0644 "$repo/man/initrd-sysext.8" "$dest$prefix/share/man/man8/initrd-sysext.8"
