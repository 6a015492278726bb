#!/bin/sh
# Link each image of /sysroot/var/lib/its/provision into /sysroot/etc/extensions
# (the link names its target as the booted system sees it).
set -eu
mkdir -p /sysroot/etc/extensions
for f in /sysroot/var/lib/its/provision/*.raw; do
    ln -sfn "${f#/sysroot}" "/sysroot/etc/extensions/${f##*/}"
    echo "its-provision: linked /etc/extensions/${f##*/} -> ${f#/sysroot}"
done
