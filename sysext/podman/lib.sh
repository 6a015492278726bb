# shellcheck shell=bash
# Helpers shared by build.sh and test.sh (sourced, not run).

cache=${INITRD_SYSEXT_CACHE:-/var/cache/initrd-sysext}
# Never write apt's binary caches into a tree we only read (the cached base).
aptq=(-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Install-Recommends=false)

# osr KEY FILE: value of KEY in an os-release file, quotes removed.
osr() {
	sed -n "s/^$1=//p" "$2" | tail -n1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'\$/\1/"
}

# os_release ROOT: path of ROOT's os-release file.
os_release() {
	if [[ -f "$1/usr/lib/os-release" ]]; then echo "$1/usr/lib/os-release"; else echo "$1/etc/os-release"; fi
}

# apt_install ROOT PKG...: install into a writable root, reusing downloaded
# .debs across builds so a rebuild does not fetch them again.
apt_install() {
	local root=$1 log
	shift
	log=$(mktemp)
	mkdir -p "$cache/debs"
	find "$cache/debs" -name '*.deb' -exec cp -t "$root/var/cache/apt/archives/" {} +
	# These roots never boot: skip the initrd rebuild (dracut, tens of
	# seconds) that their packages trigger.
	if [[ ! -e "$root/etc/initramfs-tools/update-initramfs.conf" ]]; then
		mkdir -p "$root/etc/initramfs-tools"
		echo update_initramfs=no >"$root/etc/initramfs-tools/update-initramfs.conf"
	fi
	# Newer maintainer scripts (forky's systemd-tmpfiles calls) need /proc; a
	# private mount namespace takes it away again.
	# shellcheck disable=SC2016 # expanded by the inner shell
	if ! unshare --mount --propagation private sh -c 'mount -t proc proc "$1/proc" && exec chroot "$@"' _ \
		"$root" env DEBIAN_FRONTEND=noninteractive apt-get "${aptq[@]}" -y install "$@" >"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$log"
		return 1
	fi
	rm -f "$log"
	find "$root/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -exec cp -n -t "$cache/debs/" {} +
}
