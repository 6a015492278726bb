//! Verified extensions as a user sees them: DDIs and sidecar images built here with mkfs.erofs,
//! veritysetup, openssl and sfdisk, checked by the binary in a private mount namespace. This
//! host has no device-mapper, so a DDI that passes every check ends at dm-verity set-up here; the
//! QEMU scenarios (tests-qemu) boot the same images for real.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const DDI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/ddi.sh");

/// A self-signed EC certificate and key named `cn` in the scratch dir.
fn keypair(s: &Scratch, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (s.dir.join(format!("{cn}.crt")), s.dir.join(format!("{cn}.key")));
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "30",
            ])
            .args(["-subj", &format!("/CN={cn}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    (cert, key)
}

/// Trust `cert`: it goes into the directory the tests pass as `--certs`.
fn trust(s: &Scratch, cert: &Path) {
    fs::create_dir_all(s.dir.join("certs")).unwrap();
    fs::copy(cert, s.dir.join("certs").join(cert.file_name().unwrap())).unwrap();
}

/// A DDI of the usual tree for `name` in /var/lib/extensions; see ddi.sh for the knobs.
fn ddi(s: &Scratch, name: &str, signer: Option<&(PathBuf, PathBuf)>, knobs: &[(&str, &str)]) {
    ddi_of(s, name, &s.ext_tree(name, GOOD), signer, knobs);
}

fn ddi_of(s: &Scratch, name: &str, tree: &Path, signer: Option<&(PathBuf, PathBuf)>, knobs: &[(&str, &str)]) {
    let mut cmd = Command::new("bash");
    cmd.arg(DDI).arg(tree).arg(s.path(&format!("var/lib/extensions/{name}.raw")));
    if let Some((cert, key)) = signer {
        cmd.arg(cert).arg(key);
    }
    run_ok(cmd.envs(knobs.iter().copied()));
}

/// A plain erofs image with systemd's sidecars: NAME.verity, NAME.roothash, NAME.roothash.p7s.
fn sidecar_image(s: &Scratch, name: &str, signer: &(PathBuf, PathBuf)) -> PathBuf {
    sidecar_image_at(s, name, &format!("var/lib/extensions/{name}.raw"), signer)
}

fn sidecar_image_at(s: &Scratch, name: &str, dest: &str, signer: &(PathBuf, PathBuf)) -> PathBuf {
    let tree = s.ext_tree(name, GOOD);
    s.erofs(&tree, dest);
    let stem = s.path(dest).with_extension("");
    let script = r#"set -euo pipefail
        veritysetup format "$1.raw" "$1.verity" | sed -n 's/^Root hash:[[:space:]]*//p' | tr -d '\n' >"$1.roothash"
        openssl cms -sign -binary -noattr -md sha256 -outform DER -in "$1.roothash" -signer "$2" -inkey "$3" \
            -out "$1.roothash.p7s""#;
    run_ok(Command::new("bash").args(["-c", script, "-"]).arg(&stem).arg(&signer.0).arg(&signer.1));
    stem
}

/// `plan` with the scratch certificate directory as the initrd's.
fn plan(s: &Scratch) -> Output {
    s.sh("\"$B\" plan --sysroot \"$S\" --cmdline \"$C\" --certs \"$D/certs\"")
}

fn merge_then(s: &Scratch, after: &str) -> Output {
    s.sh(&format!(
        "\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\" --certs \"$D/certs\"; echo \"rc=$?\"\n{after}"
    ))
}

/// How far a DDI that passed every check gets on this machine: merged where device-mapper
/// exists, else refused at dm-verity set-up, which proves it passed the checks before.
fn assert_reaches_dm_verity(out: &Output, name: &str) {
    assert_reaches_dm_verity_signed_by(out, name, "CN=podman");
}

fn assert_reaches_dm_verity_signed_by(out: &Output, name: &str, signer: &str) {
    if Path::new("/dev/mapper/control").exists() {
        assert_merge(out, name);
    } else {
        let line = plan_line(out, name);
        let want = format!(
            "skip: cannot be mounted after passing its checks (dm-verity, signed by {signer}): opening /dev/mapper/control"
        );
        assert!(line.contains(&want), "{line}");
    }
}

#[test]
fn a_signed_ddi_passes_its_checks_and_goes_to_dm_verity() {
    let s = Scratch::new();
    let podman = keypair(&s, "podman");
    trust(&s, &podman.0);
    ddi(&s, "signed", Some(&podman), &[]);
    ddi(&s, "signed-usr", Some(&podman), &[("ROLE", "usr")]);
    let out = plan(&s);
    assert_reaches_dm_verity(&out, "signed");
    assert_reaches_dm_verity(&out, "signed-usr");
    assert!(out.stderr.contains("policy signed: 1 trusted certificate(s)"), "{}", out.all());
}

#[test]
fn bad_signatures_and_partition_tables_are_refused_with_their_reason() {
    let s = Scratch::new();
    let podman = keypair(&s, "podman");
    let mallory = keypair(&s, "mallory");
    trust(&s, &podman.0);
    let other = "ab".repeat(32);
    fs::write(s.dir.join("garbage.json"), "{\"rootHash\": \"12").unwrap();
    ddi(&s, "unknown-key", Some(&mallory), &[]);
    ddi(&s, "other-hash-signed", Some(&podman), &[("SIGN", &other)]);
    ddi(&s, "other-hash-claimed", Some(&podman), &[("SIGN", &other), ("JSON_HASH", &other)]);
    ddi(&s, "garbage-json", None, &[("JSON", s.dir.join("garbage.json").to_str().unwrap())]);
    ddi(&s, "two-roots", Some(&podman), &[("DATA_COPIES", "2")]);
    ddi(&s, "bad-superblock", Some(&podman), &[("BAD_SUPERBLOCK", "1")]);
    ddi(&s, "verity-unsigned", None, &[]);
    s.image("plain", GOOD);
    let out = plan(&s);
    assert_skip(&out, "unknown-key", "unknown signer");
    assert!(plan_line(&out, "unknown-key").contains("CN=mallory"), "{}", out.all());
    assert_skip(&out, "other-hash-signed", "bad signature");
    assert_skip(&out, "other-hash-claimed", "root hash does not match: the signature partition gives abab");
    assert_skip(&out, "garbage-json", "has a root-verity-sig partition that is not a signature");
    assert_skip(&out, "two-roots", "has more than one root partition; which one to use is ambiguous");
    assert_skip(&out, "bad-superblock", "has no verity superblock (bad magic)");
    assert_skip(&out, "verity-unsigned", "unsigned: it has dm-verity data but no signature (policy signed)");
    assert_skip(&out, "plain", "unsigned: it has no dm-verity data and no signature (policy signed)");
}

#[test]
fn a_gpt_without_a_data_partition() {
    let s = Scratch::new();
    let raw = s.path("var/lib/extensions/empty-gpt.raw");
    run_ok(Command::new("truncate").args(["-s", "4M"]).arg(&raw));
    let table = "label: gpt\nstart=2048, size=2048, type=0fc63daf-8483-4772-8e79-3d69d8477de4\n";
    run_ok(Command::new("bash").args(["-c", "sfdisk -q \"$1\" <<<\"$2\"", "-"]).arg(&raw).arg(table));
    assert_skip(&plan(&s), "empty-gpt", "has no root or usr partition for this architecture (x86_64)");
}

#[test]
fn sidecars_are_checked_like_partitions_and_are_not_images() {
    let s = Scratch::new();
    let podman = keypair(&s, "podman");
    let mallory = keypair(&s, "mallory");
    trust(&s, &podman.0);
    sidecar_image(&s, "good", &podman);
    sidecar_image(&s, "unknown-key", &mallory);
    let wrong = sidecar_image(&s, "wrong-roothash", &podman);
    fs::write(wrong.with_extension("roothash"), "ab".repeat(32)).unwrap();
    let lonely = sidecar_image(&s, "no-roothash", &podman);
    fs::remove_file(lonely.with_extension("roothash")).unwrap();
    // Flatcar's layout: the sidecars sit next to the symlink's target.
    sidecar_image_at(&s, "linked", "opt/extensions/linked/linked-1.raw", &podman);
    fs::create_dir_all(s.path("etc/extensions")).unwrap();
    std::os::unix::fs::symlink("/opt/extensions/linked/linked-1.raw", s.path("etc/extensions/linked.raw")).unwrap();
    let out = plan(&s);
    assert_reaches_dm_verity(&out, "good");
    assert_reaches_dm_verity(&out, "linked");
    assert_skip(&out, "unknown-key", "unknown signer");
    // The claimed root hash is checked against the hash tree before the signature is trusted.
    assert_skip(&out, "wrong-roothash", "root hash does not match: the .roothash file gives abab");
    assert_skip(&out, "no-roothash", "has a .verity file but no .roothash file");
    assert!(!out.stdout.contains("not an image"), "sidecars must not be listed as images:\n{}", out.all());
}

#[test]
fn the_policy_follows_the_certificates_and_the_command_line() {
    let s = Scratch::new();
    s.image("plain", GOOD);
    ddi(&s, "plain-ddi", None, &[("ROLE", "usr"), ("VERITY", "0")]);
    // No certificate: unsigned images merge, with a warning naming why.
    let out = merge_then(&s, "cat \"$S/usr/bin/plain\" \"$S/usr/bin/plain-ddi\"");
    assert!(out.stdout.contains("rc=0\nplainplain-ddi"), "{}", out.all());
    assert!(out.stderr.contains("policy any: 0 trusted certificate(s)"), "{}", out.stderr);
    assert!(out.stderr.contains("plain: not signed: merged because the policy is any"), "{}", out.stderr);
    assert!(s.report().contains(r#""trust":"no dm-verity, unsigned","warning":"not signed"#), "{}", s.report());

    s.cmdline("rd.sysext.policy=verity");
    assert_skip(&plan(&s), "plain", "has no dm-verity data (policy verity)");

    // With a certificate, the default turns strict; `any` on the command line relaxes it.
    trust(&s, &keypair(&s, "podman").0);
    s.cmdline("");
    assert_skip(&plan(&s), "plain", "unsigned: it has no dm-verity data and no signature (policy signed)");
    s.cmdline("rd.sysext.policy=any");
    assert_merge(&plan(&s), "plain");
    s.cmdline("rd.sysext.policy=signd");
    let typo = plan(&s);
    assert!(plan_line(&typo, "plain").ends_with("(policy signed)"), "{}", typo.all());
    assert!(typo.stdout.contains("note: ignoring rd.sysext.policy=signd"), "{}", typo.all());
}

/// Fail closed: a `*.crt` that trusts nothing still makes the default policy `signed`, and the
/// log names the file and why it is unusable.
#[test]
fn an_unusable_certificate_keeps_the_default_policy_signed() {
    let s = Scratch::new();
    s.image("plain", GOOD);
    let (cert, _) = keypair(&s, "podman");
    let pem = fs::read_to_string(&cert).unwrap();
    let der = Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert).output().unwrap().stdout;
    let half: String = pem.lines().take(pem.lines().count() / 2).map(|l| format!("{l}\n")).collect();
    let oversized = fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing/oversized-rsa.crt")).unwrap();
    let certs = s.dir.join("certs");
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Make, &str); 5] = [
        ("dangling.crt", &|p| std::os::unix::fs::symlink("/nonexistent/key.crt", p).unwrap(), "dangling symlink"),
        ("truncated.crt", &|p| fs::write(p, &half).unwrap(), "has no END line"),
        ("trailing.crt", &|p| fs::write(p, [der.as_slice(), b"junk"].concat()).unwrap(), "data follows it"),
        (
            "oversized.crt",
            &|p| fs::write(p, &oversized).unwrap(),
            "RSA key of CN=initrd-sysext oversized key is unusable",
        ),
        ("directory.crt", &|p| fs::create_dir(p).unwrap(), "is a directory, not a regular file"),
    ];
    for (name, make, reason) in cases {
        if certs.exists() {
            fs::remove_dir_all(&certs).unwrap();
        }
        fs::create_dir_all(&certs).unwrap();
        make(&certs.join(name));
        let out = plan(&s);
        assert!(out.stderr.contains("policy signed: 0 trusted certificate(s), 1 unusable"), "{name}: {}", out.all());
        let note = format!("note: certificate {}/{name} is unusable and trusts nothing: ", certs.display());
        let line = out.stdout.lines().find(|l| l.starts_with(&note)).unwrap_or_else(|| panic!("{name}: {}", out.all()));
        assert!(line.contains(reason), "{name}: {line}");
        assert_skip(&out, "plain", "unsigned: it has no dm-verity data and no signature (policy signed)");
    }
}

/// A key the sysroot's /usr ships is revoked by a mask of the same name in the initrd, as
/// systemd's verity.d directories are masked: a symlink to /dev/null or an empty file.
#[test]
fn a_mask_in_the_initrd_revokes_a_key_of_the_sysroot() {
    let s = Scratch::new();
    let vendor = keypair(&s, "vendor");
    fs::create_dir_all(s.path("usr/lib/verity.d")).unwrap();
    fs::copy(&vendor.0, s.path("usr/lib/verity.d/vendor.crt")).unwrap();
    ddi(&s, "signed", Some(&vendor), &[]);
    fs::create_dir_all(s.dir.join("certs")).unwrap();
    let out = plan(&s);
    assert_reaches_dm_verity_signed_by(&out, "signed", "CN=vendor");
    assert!(out.stderr.contains("policy signed: 1 trusted certificate(s)"), "{}", out.all());
    for mask in ["symlink", "empty"] {
        let m = s.dir.join("certs/vendor.crt");
        if m.symlink_metadata().is_ok() {
            fs::remove_file(&m).unwrap();
        }
        match mask {
            "symlink" => std::os::unix::fs::symlink("/dev/null", &m).unwrap(),
            _ => fs::write(&m, "").unwrap(),
        }
        let out = plan(&s);
        assert!(out.stderr.contains("policy signed: 0 trusted certificate(s), 1 unusable"), "{mask}: {}", out.all());
        assert!(out.stdout.contains(&format!("note: certificate {} is masked", m.display())), "{mask}: {}", out.all());
        assert_skip(&out, "signed", "its signature cannot be checked: no usable trusted certificate is installed");
    }
    // The revocation outlives switch-root: the mask is handed over to /run/verity.d, where the
    // booted systemd looks before the root's /usr/lib/verity.d.
    let out =
        s.sh("\"$B\" merge --sysroot \"$S\" --cmdline \"$C\" --report \"$R\" --certs \"$D/certs\" --run \"$D/run\"");
    assert_eq!(
        fs::read_link(s.dir.join("run/verity.d/vendor.crt")).ok(),
        Some(PathBuf::from("/dev/null")),
        "{}",
        out.all()
    );
}

/// The dracut module takes the build system's /etc/verity.d and /usr/lib/verity.d into the
/// initrd as they are: certificates, masks and broken entries, so that at boot a mask there
/// revokes a key of the same name, also one the sysroot's /usr ships, and a broken entry fails
/// closed. (dracut's inst_simple is stood in for by `install`.)
#[test]
fn the_dracut_module_takes_certificates_and_masks_into_the_initrd() {
    let s = Scratch::new();
    let (host, initrd) = (s.dir.join("host"), s.dir.join("initrd"));
    let vendor = keypair(&s, "vendor");
    for d in ["etc/verity.d", "usr/lib/verity.d"] {
        fs::create_dir_all(host.join(d)).unwrap();
    }
    fs::copy(&vendor.0, host.join("usr/lib/verity.d/vendor.crt")).unwrap();
    fs::copy(&keypair(&s, "local").0, host.join("etc/verity.d/local.crt")).unwrap();
    std::os::unix::fs::symlink("/dev/null", host.join("etc/verity.d/vendor.crt")).unwrap();
    std::os::unix::fs::symlink("/gone.crt", host.join("etc/verity.d/gone.crt")).unwrap();
    let module = concat!(env!("CARGO_MANIFEST_DIR"), "/dracut/90initrd-sysext/module-setup.sh");
    let script = r#"set -euo pipefail
        inst_simple() { command install -D -m 0644 "$dracutsysrootdir$1" "$initdir$1"; }
        dwarn() { echo "dwarn: $*" >&2; }
        . "$0"
        install_certificates"#;
    let out = Command::new("bash")
        .args(["-c", script, module])
        .env("dracutsysrootdir", &host)
        .env("initdir", &initrd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gone.crt is a dangling symlink"));
    assert_eq!(fs::read_link(initrd.join("etc/verity.d/vendor.crt")).unwrap(), Path::new("/dev/null"));
    assert_eq!(fs::read_link(initrd.join("etc/verity.d/gone.crt")).unwrap(), Path::new("/gone.crt"));
    assert_eq!(fs::read(initrd.join("usr/lib/verity.d/vendor.crt")).unwrap(), fs::read(&vendor.0).unwrap());
    // At boot, with the initrd's directories: the local key is trusted, the vendor key is masked
    // (in the initrd's copy and in the sysroot's /usr alike), the dangling entry is named.
    fs::create_dir_all(s.path("usr/lib/verity.d")).unwrap();
    fs::copy(&vendor.0, s.path("usr/lib/verity.d/vendor.crt")).unwrap();
    ddi(&s, "by-vendor", Some(&vendor), &[]);
    let dirs = format!("{0}/etc/verity.d:{0}/usr/lib/verity.d", initrd.display());
    let out = s.sh(&format!("\"$B\" plan --sysroot \"$S\" --cmdline \"$C\" --certs {dirs}"));
    assert!(out.stderr.contains("policy signed: 1 trusted certificate(s), 2 unusable"), "{}", out.all());
    assert!(out.stdout.contains("etc/verity.d/vendor.crt is masked (a symlink to /dev/null)"), "{}", out.all());
    assert!(out
        .stdout
        .contains("etc/verity.d/gone.crt is unusable and trusts nothing: it is a dangling symlink to /gone.crt"));
    assert_skip(&out, "by-vendor", "unknown signer: the signature was made by CN=vendor");
}

/// The hash tree must cover the whole file system: a tree over part of it would pass and the
/// rest would fail with EIO after the merge. Zeros after it, as systemd-repart pads a small
/// file system's partition (its podman-etc DDI: 12 KiB of erofs in 512 KiB), are no part of it.
#[test]
fn a_hash_tree_over_part_of_the_file_system_is_refused() {
    let s = Scratch::new();
    let podman = keypair(&s, "podman");
    trust(&s, &podman.0);
    ddi(&s, "whole", Some(&podman), &[]);
    // Four blocks of data at least (erofs keeps a file of random bytes uncompressed).
    let random: String = (0..12288).map(|i| char::from(b'a' + (i * 7919 % 26) as u8)).collect();
    let release = "usr/lib/extension-release.d/extension-release.partial";
    let tree = s.tree("partial", &[(release, GOOD), ("usr/bin/partial", random.as_str())]);
    ddi_of(&s, "partial", &tree, Some(&podman), &[("DATA_BLOCKS", "2")]);
    ddi_of(&s, "padded", &s.ext_tree("padded", GOOD), Some(&podman), &[("DATA_PAD", "524288")]);
    let out = plan(&s);
    assert_reaches_dm_verity(&out, "whole");
    assert_reaches_dm_verity(&out, "padded");
    let line = plan_line(&out, "partial");
    assert!(line.contains("skip: has a hash tree that covers only 8192 of the "), "{line}");
    assert!(line.contains(" bytes of its data partition (2 blocks of 4096 bytes), and the file system there is truncated: its erofs superblock says "), "{line}");
}

/// sha256 and sha512, what the kernel and systemd use, are checked alike (root hash length,
/// tree size, the top block); any other algorithm is refused by name.
#[test]
fn verity_hash_algorithms_are_allow_listed_and_checked_alike() {
    let s = Scratch::new();
    let podman = keypair(&s, "podman");
    trust(&s, &podman.0);
    let other = "ab".repeat(64);
    ddi(&s, "sha512", Some(&podman), &[("HASH", "sha512")]);
    ddi(&s, "sha512-claimed", Some(&podman), &[("HASH", "sha512"), ("SIGN", &other), ("JSON_HASH", &other)]);
    ddi(&s, "sha512-unsigned", None, &[("HASH", "sha512")]);
    ddi(&s, "sha1", Some(&podman), &[("HASH", "sha1")]);
    let out = plan(&s);
    assert_reaches_dm_verity(&out, "sha512");
    assert_skip(&out, "sha512-claimed", "root hash does not match: the signature partition gives abab");
    assert_skip(&out, "sha512-unsigned", "the partition UUIDs give a 32-byte root hash, but sha512 needs 64 bytes");
    assert_skip(&out, "sha1", "has a verity superblock with the hash algorithm sha1, which is not accepted");
}

/// A refusal for size states the real size, not where reading stopped.
#[test]
fn oversized_evidence_is_refused_with_its_real_size() {
    let s = Scratch::new();
    let podman = keypair(&s, "podman");
    trust(&s, &podman.0);
    ddi(&s, "big-sig", Some(&podman), &[("SIG_SIZE", "8M")]);
    let p7s = sidecar_image(&s, "big-p7s", &podman).with_extension("roothash.p7s");
    fs::OpenOptions::new().append(true).open(&p7s).unwrap().set_len(101 * 1024).unwrap();
    let roothash = sidecar_image(&s, "big-roothash", &podman).with_extension("roothash");
    fs::OpenOptions::new().append(true).open(&roothash).unwrap().set_len(2000).unwrap();
    fs::write(s.dir.join("certs/huge.crt"), vec![b' '; 2 << 20]).unwrap();
    let out = plan(&s);
    assert_skip(&out, "big-sig", "has a root-verity-sig partition of 8388608 bytes, more than the 4194304");
    assert_skip(&out, "big-p7s", "malformed signature: the signature is 103424 bytes, more than the 65536 allowed");
    assert_skip(&out, "big-roothash", "has a .roothash of 2000 bytes, more than the 1024");
    assert!(out.stdout.contains("huge.crt is unusable and trusts nothing: it is 2097152 bytes, more than the 1048576"));
}
