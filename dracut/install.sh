#!/usr/bin/env bash
# Install the activator and its dracut module.
#   DESTDIR=/staging PREFIX=/usr dracut/install.sh [path/to/initrd-sysext]
# The binary goes to $PREFIX/bin; the module to $DRACUTMODDIR (default
# $PREFIX/lib/dracut/modules.d, the directory dracut reads when PREFIX=/usr).
# The module is told where the binary is, so PREFIX=/usr/local works too.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=${PREFIX:-/usr}
dest=${DESTDIR:-}
moddir=${DRACUTMODDIR:-$prefix/lib/dracut/modules.d}/90initrd-sysext
bin=${1:-$here/../target/x86_64-unknown-linux-musl/release/initrd-sysext}

install -D -m 0755 "$bin" "$dest$prefix/bin/initrd-sysext"
install -d "$dest$moddir"
sed "s|/usr/bin/initrd-sysext}|$prefix/bin/initrd-sysext}|" \
    "$here/90initrd-sysext/module-setup.sh" >"$dest$moddir/module-setup.sh"
chmod 0755 "$dest$moddir/module-setup.sh"
install -m 0644 "$here/90initrd-sysext/initrd-sysext.service" \
    "$here/90initrd-sysext/modules-load.conf" "$dest$moddir/"
