#!/usr/bin/env bash
# ddi.sh TREE OUT [CERT KEY]: a DDI laid out as systemd-repart --make-ddi=sysext does: an erofs
# data partition, its dm-verity hash partition and, with CERT and KEY, a signature partition
# holding {"rootHash": …, "signature": base64 PKCS#7 over the hex root hash}. Partition UUIDs
# are the two halves of the root hash. Knobs for the bad-input tests (environment):
#   ROLE=usr        a usr partition holding TREE/usr (default: root, holding TREE)
#   VERITY=0        the data partition only
#   SIGN=HEX        sign this root hash instead of the real one
#   JSON_HASH=HEX   put this root hash into the JSON
#   JSON=FILE       the signature partition's content, as is
#   DATA_COPIES=2   two data partitions
#   BAD_SUPERBLOCK=1  overwrite the verity superblock's magic
#   HASH=sha512     the verity hash algorithm (default sha256)
#   DATA_BLOCKS=N   a hash tree over the first N data blocks only
#   DATA_PAD=N      zeros after the hashed file system, up to N bytes of data partition
#                   (systemd-repart pads a small file system's partition so)
#   SIG_SIZE=N      the signature partition's size (default 4096)
# Also writes OUT.roothash and, with VERITY, the sidecar-style OUT.hash.
set -euo pipefail
tree=$1 out=$2 cert=${3:-} key=${4:-}
role=${ROLE:-root}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

case $role in
root) t_data=4f68bce3-e8cd-4db1-96e7-fbcaf984b709 t_hash=2c7357ed-ebd2-46d9-aec1-23d437ec2bf5
	t_sig=41092b05-9fc8-4523-994f-2def0408b176 src=$tree ;;
usr) t_data=8484680c-9521-48c6-9c11-b0720656f69e t_hash=77ff5f63-e7b6-4633-acf4-1565b864c0e6
	t_sig=e7bb33fb-06cf-4e81-8273-e543b413e2e2 src=$tree/usr ;;
esac

mkfs.erofs --quiet -x1 "$work/data" "$src" >/dev/null
vopts=(--hash="${HASH:-sha256}")
[[ -z ${DATA_BLOCKS:-} ]] || vopts+=(--data-blocks="$DATA_BLOCKS")
roothash=$(veritysetup format "${vopts[@]}" "$work/data" "$work/hash" | sed -n 's/^Root hash:[[:space:]]*//p')
printf %s "$roothash" >"$out.roothash"
[[ -z ${DATA_PAD:-} ]] || truncate -s "$DATA_PAD" "$work/data"
if [[ ${BAD_SUPERBLOCK:-0} == 1 ]]; then
	printf 'garbage!' | dd of="$work/hash" conv=notrunc status=none
fi
cp "$work/hash" "$out.hash"
uuid() { printf '%s-%s-%s-%s-%s' "${1:0:8}" "${1:8:4}" "${1:12:4}" "${1:16:4}" "${1:20:12}"; }

parts=("$work/data" "$t_data" "$(uuid "${roothash:0:32}")")
# The UUIDs are the first and the last 128 bits of the root hash (for sha512 too).
for ((i = 1; i < ${DATA_COPIES:-1}; i++)); do
	parts+=("$work/data" "$t_data" "$(uuid "$(printf '%032x' "$i")")")
done
if [[ ${VERITY:-1} == 1 ]]; then
	parts+=("$work/hash" "$t_hash" "$(uuid "${roothash:$((${#roothash} - 32)):32}")")
fi
if [[ -n $cert || -n ${JSON:-} ]]; then
	if [[ -n ${JSON:-} ]]; then
		cp "$JSON" "$work/sig.json"
	else
		printf %s "${SIGN:-$roothash}" >"$work/signed"
		openssl cms -sign -binary -noattr -md sha256 -outform DER -in "$work/signed" \
			-signer "$cert" -inkey "$key" -out "$work/sig.der"
		printf '{"rootHash":"%s","certificateFingerprint":"00","signature":"%s"}' \
			"${JSON_HASH:-$roothash}" "$(base64 -w0 "$work/sig.der")" >"$work/sig.json"
	fi
	truncate -s "${SIG_SIZE:-4096}" "$work/sig.json"
	parts+=("$work/sig.json" "$t_sig" "$(uuid "$(printf '%032x' 99)")")
fi

# 1 MiB-aligned partitions after a 1 MiB gap; the backup GPT needs the last 33 sectors.
script="label: gpt"$'\n'"unit: sectors"$'\n'
start=2048
for ((i = 0; i < ${#parts[@]}; i += 3)); do
	sectors=$((($(stat -c %s "${parts[i]}") + 511) / 512))
	script+="start=$start, size=$sectors, type=${parts[i + 1]}, uuid=${parts[i + 2]}"$'\n'
	offsets+=("$start")
	start=$(((start + sectors + 2047) / 2048 * 2048))
done
rm -f "$out"
truncate -s $(((start + 2048) * 512)) "$out"
sfdisk -q "$out" <<<"$script"
for ((i = 0; i < ${#parts[@]}; i += 3)); do
	dd if="${parts[i]}" of="$out" bs=512 seek="${offsets[i / 3]}" conv=notrunc status=none
done
